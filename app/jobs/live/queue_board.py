"""Where each waiting job stands in the queue, as one replica last read it.

Reads of a job (`queue_position`, `estimated_start_at`) and the `queue` events of live
streams share one reading of the scheduler's order per replica: read at most once per
QUEUE_BOARD_SECONDS while someone asks, never once per reader or stream. A job created
after the reading (the answer to its create, above all) is placed in it as its owner's
newest waiting job, by the key fair share would give it (`scheduler.admit_newcomer`):
a create used to wait for a reading of its own, which with thousands of jobs waiting
halved the creates a replica could take (bench.api_throughput). While streams are open, a
round every QUEUE_BOARD_SECONDS pushes each job's new place to the streams that follow it
or its owner; a job whose place did not change gets nothing, so a stream sees at most one
`queue` event per job a round.
"""

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import is_database_unavailable
from app.db.models import Job
from app.identity.plans import Plans
from app.jobs import scheduler
from app.jobs.live.events import EventHub
from app.jobs.live.inbox import QueueSpot
from app.jobs.schemas import JobOut
from app.jobs.states import JobStatus
from app.kit.loops import Loop

logger = logging.getLogger(__name__)
RENDERS_MEASURED = 50  # the recent finished renders whose mean times the queue
DEPTH = 500  # each owner's waiting jobs placed (the order's cost stays bounded)
NEVER = datetime.min.replace(tzinfo=UTC)
Out = TypeVar("Out", bound=JobOut)


async def mean_render_seconds(session: AsyncSession) -> float | None:
    """From submission to outcome, over the latest finished renders."""
    rows = (
        await session.execute(
            select(Job.submitted_at, Job.finished_at)
            .where(
                Job.status.in_((JobStatus.SUCCEEDED, JobStatus.FAILED)),
                Job.submitted_at.is_not(None),
                Job.finished_at.is_not(None),
            )
            .order_by(Job.finished_at.desc())
            .limit(RENDERS_MEASURED)
        )
    ).all()
    spans = [
        (finished - submitted).total_seconds()
        for submitted, finished in rows
        if submitted and finished
    ]
    return sum(spans) / len(spans) if spans else None


def estimate(
    position: int, account: scheduler.Capacity, render_seconds: float | None, now: datetime
) -> datetime | None:
    """When the job at `position` should start: at once while the account has room for
    everything before it, else when enough slots have freed (cap slots a render)."""
    if render_seconds is None:
        return None
    free = account.free
    if free is None or position < free:
        return now
    slots = account.cap or 1
    return now + timedelta(seconds=(position - free + 1) * render_seconds / slots)


class QueueBoard(Loop):
    name = "queue-board"

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, hub: EventHub
    ) -> None:
        super().__init__(settings.queue_board_seconds)
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._plans = Plans(settings)
        self._hub = hub
        self._spots: dict[uuid.UUID, QueueSpot] = {}
        self._pushed: dict[uuid.UUID, int] = {}  # the place each stream was last told
        self._view: scheduler.QueueView | None = None
        self._render_seconds: float | None = None
        self._read_started = NEVER
        self._reading: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        started = datetime.now(UTC)
        async with self._sessionmaker() as session:
            view = await scheduler.queue_order(session, self._settings, self._plans, DEPTH)
            render_seconds = await mean_render_seconds(session)
        account = view.account
        self._spots = {
            job.id: QueueSpot(
                job.id, job.owner, position, estimate(position, account, render_seconds, started)
            )
            for position, job in enumerate(view.order)
        }
        self._view, self._render_seconds = view, render_seconds
        self._read_started = started

    async def read(self) -> None:
        """Read the queue unless a reading started within the board's period; readers
        that come meanwhile share the reading under way."""
        period = timedelta(seconds=self._settings.queue_board_seconds)
        if self._read_started > datetime.now(UTC) - period:
            return
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read(), name="queue-board-read")
        await asyncio.shield(self._reading)

    async def place(self, outs: list[Out], jobs: Sequence[Job]) -> list[Out]:
        """Jobs to show (`outs`, of the `jobs` rows), with their places: read fresh enough
        if any of them waits. A place is extra: a database that fails the reading (a create
        already committed, say) leaves the jobs without it, never the answer failing."""
        if any(out.status is JobStatus.QUEUED for out in outs):
            try:
                await self.read()
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                logger.warning("queue places not read (%s); shown without", type(exc).__name__)
        return [self.annotate(out, job) for out, job in zip(outs, jobs, strict=True)]

    def annotate(self, out: Out, job: Job) -> Out:
        """Its place as last read, or, for a job created since, where it stands in that
        reading (`job`: the row, for its owner and plan)."""
        if out.status is not JobStatus.QUEUED:
            return out
        spot = self._spots.get(out.id) or self._newcomer(job)
        if spot is not None:
            out.queue_position = spot.position
            out.estimated_start_at = spot.estimated_start_at
        return out

    def _newcomer(self, job: Job) -> QueueSpot | None:
        """Placed once, then shown as placed until the next reading; None for a job the
        reading saw and left out (deeper than DEPTH, or being sent)."""
        if self._view is None or job.created_at <= self._read_started:
            return None
        waiting = scheduler.Waiting(job.id, job.owner, job.plan, job.created_at)
        position = scheduler.admit_newcomer(self._view, self._plans, waiting, DEPTH)
        if position is None:
            return None
        started = estimate(position, self._view.account, self._render_seconds, self._read_started)
        self._spots[job.id] = spot = QueueSpot(job.id, job.owner, position, started)
        return spot

    async def run_once(self) -> int:
        """While streams are open: read the queue and push each job's new place."""
        if not self._hub.has_subscribers():
            self._pushed.clear()
            return 0
        await self.read()
        changed = [
            spot
            for job_id, spot in self._spots.items()
            if self._pushed.get(job_id) != spot.position
        ]
        self._pushed = {job_id: spot.position for job_id, spot in self._spots.items()}
        for spot in changed:
            self._hub.push_queue_spot(spot)
        return len(changed)
