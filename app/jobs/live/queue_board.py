"""Where each waiting job stands in the queue, as one replica sees it.

Reads of a job (`queue_position`, `estimated_start_at`) and the `queue` events of live
streams share one reading of the scheduler's order per replica, of every waiting job:
read at most once per QUEUE_BOARD_SECONDS while someone asks, never once per reader or
stream. A job's place is its index in that order, so the places shown at any moment are
0..n-1, each once. Between readings the order is kept: a job created since (the answer to
its create, above all) is admitted as its owner's newest waiting job, by the key fair share
would give it (`QueueView.admit`), which is the place the next reading gives it;
a job that leaves the line (its move out of `queued`, from any replica's notice, or a row
read while it is being sent) is taken out. While streams are open, a round every
QUEUE_BOARD_SECONDS pushes each job's new place to the streams that follow it or its
owner; a job whose place did not change gets nothing. A reading of 10,000 waiting jobs is
tens of milliseconds of Python: it reads and orders them a few hundred at a time, handing
the loop to the requests between (`scheduler.queue_order`), and no request waits for it
but the first (the others are served the order as it stands); a place, a newcomer or a
leaver between readings is O(log n) (`app/jobs/queue_view.py`).
"""

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import is_database_unavailable
from app.db.models import Job, JobEvent
from app.identity.plans import Plans
from app.jobs import scheduler
from app.jobs.live.events import EventHub, Notice
from app.jobs.live.inbox import QueueSpot
from app.jobs.queue_view import Capacity, QueueView, Waiting
from app.jobs.schemas import JobOut
from app.jobs.states import JobStatus
from app.kit.loops import Loop

logger = logging.getLogger(__name__)
RENDERS_MEASURED = 50  # the recent finished renders whose mean times the queue
READING_SHARE = 0.02  # of the loop's time, at most, spent reading the queue
READING_COST_PER_JOB = timedelta(microseconds=6)  # bench.queue_reading: 60 ms at 10,000
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
    position: int, account: Capacity, render_seconds: float | None, now: datetime
) -> datetime | None:
    """When the job at `position` should start: at once while the account has room for
    everything before it, else when enough slots have freed (cap slots a render); unknown
    while the account is paused (no one can say when it works again)."""
    if render_seconds is None or account.paused:
        return None
    free = account.free
    if free is None or position < free:
        return now
    slots = account.cap or 1
    return now + timedelta(seconds=(position - free + 1) * render_seconds / slots)


def _said_if_failed(reading: "asyncio.Task[None]") -> None:
    """A reading no one waited for: its failure logged (the order as it stands is kept)."""
    if not reading.cancelled() and (exc := reading.exception()) is not None:
        logger.warning("the queue was not read (%s); places as they stood", type(exc).__name__)


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
        self._view: QueueView | None = None
        self._pushed: dict[uuid.UUID, int] = {}  # the place each stream was last told
        self._render_seconds: float | None = None
        self._read_started = NEVER
        self._period = timedelta(seconds=settings.queue_board_seconds)  # see `_read`
        self._seen_moves = 0  # the newest move a reading's snapshot may include
        self._left: dict[uuid.UUID, int] = {}  # moves out of the line while a reading runs
        self._reading: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        started = datetime.now(UTC)
        self._left.clear()
        async with self._sessionmaker() as session:
            # read first: a move the reading may already show has an id at most this one
            seen = await session.scalar(select(func.max(JobEvent.id))) or 0
            view = await scheduler.queue_order(session, self._settings, self._plans)
            render_seconds = await mean_render_seconds(session)
        if self._view is not None:  # created since the reading's snapshot: kept
            for job in self._view.newcomers():
                view.admit(job, self._plans.named(job.plan).queue_weight)
        self._view = view
        self._render_seconds, self._read_started, self._seen_moves = render_seconds, started, seen
        # readings take at most READING_SHARE of the loop: at 10,000 waiting jobs one is
        # about 60 ms, every 2 s a p99 of 35 ms for the requests served meanwhile
        cost = len(view) * READING_COST_PER_JOB / READING_SHARE
        self._period = max(timedelta(seconds=self._settings.queue_board_seconds), cost)
        for job_id, event_id in self._left.items():  # moved while the queue was read
            if event_id > seen:
                self._take_out(job_id)
        self._left.clear()

    async def read(self) -> None:
        """Start a reading unless one started within the board's period (QUEUE_BOARD_SECONDS,
        longer where readings cost more than READING_SHARE of the loop). A reader waits
        for it when it is one step (a few hundred jobs: milliseconds), or when the order
        is older than two periods (the first question, or the first on a replica asked
        nothing for a while). Otherwise a reading starts when the order is one period old
        and ends long before the second, and no request is held for it (at 10,000 waiting
        jobs it is tens of milliseconds of this loop, paced over the requests served
        meanwhile): they are served the order as it stands, kept exact by newcomers and
        leavers, and the newcomers carry over into the new order."""
        period, age = self._period, datetime.now(UTC) - self._read_started
        if age >= period and (self._reading is None or self._reading.done()):
            self._reading = asyncio.create_task(self._read(), name="queue-board-read")
            self._reading.add_done_callback(_said_if_failed)
        quick = self._view is not None and len(self._view) < scheduler.READ_IN_STEPS
        if self._reading is not None and (age >= 2 * period or quick):
            await asyncio.shield(self._reading)

    def note(self, notice: Notice) -> None:
        """A move out of the line (sent, canceled, failed) takes its job out of the order
        at once, so the places shown stay 0..n-1 over the jobs still waiting."""
        if not notice.leaves_the_line or notice.event_id <= self._seen_moves:
            return
        if self._reading is not None and not self._reading.done():
            self._left[notice.job_id] = notice.event_id  # the new order may still show it
        self._take_out(notice.job_id)

    def _take_out(self, job_id: uuid.UUID) -> None:
        if self._view is not None:
            self._view.leave(job_id)

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
        """Its place in the order (`job`: the row, for its owner and plan): a job created
        since the reading is admitted where the next reading will put it; a job being sent
        has left the line."""
        if out.status is not JobStatus.QUEUED or self._view is None:
            return out
        if job.submit_started_at is not None:
            self._take_out(job.id)
            return out
        waiting = Waiting(job.id, job.owner, job.plan, job.created_at)
        place = self._view.admit(waiting, self._plans.named(job.plan).queue_weight)
        out.queue_position = place
        out.estimated_start_at = self._estimate(place)
        return out

    def _estimate(self, place: int) -> datetime | None:
        assert self._view is not None
        return estimate(place, self._view.account, self._render_seconds, self._read_started)

    def spots(self) -> list[QueueSpot]:
        """Every waiting job's place, as the order stands."""
        if self._view is None:
            return []
        return [
            QueueSpot(job.id, job.owner, place, self._estimate(place))
            for place, job in enumerate(self._view.order())
        ]

    async def run_once(self) -> int:
        """While streams are open: read the queue and push each job's new place."""
        if not self._hub.has_subscribers():
            self._pushed.clear()
            return 0
        await self.read()
        spots = self.spots()
        changed = [spot for spot in spots if self._pushed.get(spot.job_id) != spot.position]
        self._pushed = {spot.job_id: spot.position for spot in spots}
        for spot in changed:
            self._hub.push_queue_spot(spot)
        return len(changed)
