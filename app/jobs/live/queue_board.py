"""Where each waiting job stands in the queue, as one replica last read it.

Reads of a job (`queue_position`, `estimated_start_at`) and the `queue` events of live
streams share one reading of the scheduler's order per replica: read at most once per
QUEUE_BOARD_SECONDS while someone asks (and again for a job newer than the reading), never
once per reader or stream. While streams are open, a round every QUEUE_BOARD_SECONDS
pushes each job's new place to the streams that follow it or its owner; a job whose place
did not change gets nothing, so a stream sees at most one `queue` event per job a round.
"""

import asyncio
import logging
import uuid
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
    spans = [(finished - submitted).total_seconds() for submitted, finished in rows]
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
        self._read_started = started

    async def read(self, newer_than: datetime = NEVER) -> None:
        """Read the queue unless a reading started after `newer_than` and within the
        board's period; readers that come meanwhile share the reading under way."""
        period = timedelta(seconds=self._settings.queue_board_seconds)
        if self._read_started > max(newer_than, datetime.now(UTC) - period):
            return
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read(), name="queue-board-read")
        await asyncio.shield(self._reading)

    async def place(self, outs: list[Out]) -> list[Out]:
        """Jobs to show, with their places: read fresh enough if any of them waits. A place
        is extra: a database that fails the reading (a create already committed, say)
        leaves the jobs without it, never the answer failing."""
        waiting = [out.created_at for out in outs if out.status is JobStatus.QUEUED]
        if waiting:
            try:
                await self.read(max(waiting))
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                logger.warning("queue places not read (%s); shown without", type(exc).__name__)
        return [self.annotate(out) for out in outs]

    def annotate(self, out: Out) -> Out:
        """Its place as last read (a job newer than the reading has none yet)."""
        if out.status is JobStatus.QUEUED and (spot := self._spots.get(out.id)) is not None:
            out.queue_position = spot.position
            out.estimated_start_at = spot.estimated_start_at
        return out

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
