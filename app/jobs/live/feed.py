"""Live feeds of job state changes: the moves the event hub pushes to the stream's inbox,
and the database's record of them when the stream may have missed some.

Each item is one recorded move plus the job as it was read with it. Event ids are the
`job_events` ids (monotonic), so a client that reconnects with Last-Event-ID gets exactly
the moves it has not seen. A feed yields None when nothing came for `heartbeat_seconds`
(the stream writes a heartbeat from memory, with no database work).
"""

import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import Job, JobEvent
from app.jobs.live.events import EventHub
from app.jobs.live.inbox import BalanceChanged, FeedItem, Inbox, QueueSpot
from app.jobs.states import is_terminal, moves_credits

PAGE = 500


class Catchup:
    """Where a feed stands: the moves it has yielded and the ones a re-read brought.

    A pushed move is new unless the last re-read brought it or it is not after that
    re-read's start; moves of different jobs may commit out of id order, so "after the
    highest id yielded" alone would drop a move that committed late."""

    __slots__ = ("floor", "last", "read", "status")

    def __init__(self, after_event_id: int) -> None:
        self.floor = self.last = after_event_id
        self.read: set[int] = set()
        self.status: str | None = None  # of the last move yielded

    def start_read(self) -> int:
        self.floor, self.read = self.last, set()
        return self.floor

    def is_new(self, item: FeedItem) -> bool:
        return item.event.id > self.floor and item.event.id not in self.read

    def follows(self, item: FeedItem) -> bool:
        """Whether a move of one job takes it on from the last one yielded (no gap)."""
        return self.status is None or item.event.from_status == self.status

    def yielded(self, item: FeedItem, by_read: bool) -> None:
        self.last = max(self.last, item.event.id)
        self.status = item.event.to_status
        if by_read:
            self.read.add(item.event.id)


Query = Callable[[int], Select[JobEvent, Job]]


def _moves_after(which: ColumnElement[bool]) -> Query:
    """The recorded moves (with their jobs) matching `which` after a given id, in order."""
    return lambda after: (
        select(JobEvent, Job)
        .join(Job, Job.id == JobEvent.job_id)
        .where(which, JobEvent.id > after)
        .order_by(JobEvent.id)
    )


async def _reread(
    sessionmaker: async_sessionmaker[AsyncSession], at: Catchup, query: Query
) -> AsyncIterator[FeedItem]:
    """Every recorded move after where the feed stands, page by page."""
    after = at.start_read()
    while True:
        async with sessionmaker() as session:
            rows = (await session.execute(query(after).limit(PAGE))).all()
        for move, job in rows:
            item = FeedItem(move, job)
            at.yielded(item, by_read=True)
            yield item
            after = move.id
        if len(rows) < PAGE:
            return


def _note_credits(inbox: Inbox, item: FeedItem) -> None:
    """A move that held or settled the job's credits: the stream says the balance once
    after the moves that came with it (read when said: one event tells it all)."""
    if moves_credits(item.event, item.job):
        inbox.push_balance()


async def _follow(
    sessionmaker: async_sessionmaker[AsyncSession],
    inbox: Inbox,
    at: Catchup,
    query: Query,
    heartbeat_seconds: float,
    job_ended: Callable[[], Awaitable[bool]] | None,
) -> AsyncIterator[FeedItem | QueueSpot | BalanceChanged | None]:
    """A re-read first and whenever the inbox turned stale, the pushed moves otherwise,
    None for a heartbeat; until the inbox is closed, after what it already held (a stream
    closed as it opens, by a server stopping, still gets the moves recorded before it
    began). A feed of one job (`job_ended` given) also re-reads when a pushed move does
    not follow the last one (a gap), and ends when the job has ended before where the
    client resumed (a Last-Event-ID past its last move: no move of it is new, so none
    would end the stream)."""
    one_job = job_ended is not None
    inbox.stale = True  # the moves recorded before the stream began
    while True:
        if inbox.take_stale():
            read = 0
            async for item in _reread(sessionmaker, at, query):
                read += 1
                _note_credits(inbox, item)
                yield item
            if not read and job_ended is not None and await job_ended():
                return
        for item in inbox.take():
            if not at.is_new(item):
                if one_job and is_terminal(item.event.to_status):
                    return
                continue
            if one_job and not at.follows(item):
                inbox.mark_stale()  # the re-read brings the missed move and this one
                break
            at.yielded(item, by_read=False)
            _note_credits(inbox, item)
            yield item
        for spot in inbox.take_spots():
            yield spot
        if inbox.take_balance():
            yield BalanceChanged()
        if inbox.closed:
            return
        # jittered: streams opened together would otherwise beat together, a burst of
        # thousands of writes that holds the loop (and the moves behind it) every period
        if not await inbox.wait(heartbeat_seconds * random.uniform(0.5, 1.0)):  # noqa: S311
            yield None


async def job_feed(
    sessionmaker: async_sessionmaker[AsyncSession],
    hub: EventHub,
    job_id: uuid.UUID,
    inbox: Inbox,
    *,
    after_event_id: int | None,
    heartbeat_seconds: float,
) -> AsyncIterator[FeedItem | QueueSpot | BalanceChanged | None]:
    """Moves of one job after `after_event_id` (without it: its latest move first), until
    the job is terminal or the inbox is closed (the server is shutting down: the client
    resumes elsewhere with Last-Event-ID). The caller has checked that the job is the
    client's."""
    job_status = select(Job.status).where(Job.id == job_id)
    with hub.for_job(job_id, inbox):  # subscribe before reading: no gap
        async with sessionmaker() as session:
            status = await session.scalar(job_status)
            latest = await session.scalar(
                select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id)
            )
        latest = latest or 0
        after = latest - 1 if after_event_id is None else after_event_id
        if status is None or (is_terminal(status) and after >= latest):
            return  # gone, or resumed after its last move: nothing more will come

        async def ended() -> bool:
            async with sessionmaker() as session:
                status = await session.scalar(job_status)
            return status is None or is_terminal(status)

        query = _moves_after(JobEvent.job_id == job_id)
        feed = _follow(sessionmaker, inbox, Catchup(after), query, heartbeat_seconds, ended)
        async for item in feed:
            yield item
            if isinstance(item, FeedItem) and is_terminal(item.event.to_status):
                return


async def latest_event_id(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """The id of the latest move of any job: a feed after it starts "from now on"."""
    async with sessionmaker() as session:
        return await session.scalar(select(func.max(JobEvent.id))) or 0


async def owner_feed(
    sessionmaker: async_sessionmaker[AsyncSession],
    hub: EventHub,
    owner: str,
    inbox: Inbox,
    *,
    after_event_id: int,
    heartbeat_seconds: float,
) -> AsyncIterator[FeedItem | QueueSpot | BalanceChanged | None]:
    """Every move of the owner's jobs after `after_event_id` (`latest_event_id()`: from now
    on), until the inbox is closed."""
    with hub.for_owner(owner, inbox):
        query = _moves_after(Job.owner == owner)
        feed = _follow(sessionmaker, inbox, Catchup(after_event_id), query, heartbeat_seconds, None)
        async for item in feed:
            yield item
