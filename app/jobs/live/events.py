"""Pub/sub of job state changes, for live streams (SSE).

On Postgres a trigger NOTIFYs every new `job_events` row at commit (migration 0002), and
each replica LISTENs on one dedicated connection, so a change made by any replica (a
callback landing on A) reaches streams open on every other (a client on B). On SQLite
(one process) the same notices are published in-process after each commit.

A notice says only which job moved and the event's id. The hub reads each move once (the
notices that arrive together, in one query) and pushes it to every inbox that follows the
job or its owner, so the database's work follows the moves, not the viewers. Streams read
for themselves only when they may have missed something: at the start (the moves before
it), after the LISTEN connection came back, and when their inbox overflowed.
"""

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Job, JobEvent
from app.jobs.live.inbox import FeedItem, Inbox, QueueSpot
from app.jobs.states import JobStatus

logger = logging.getLogger(__name__)
CHANNEL = "job_events"
# a job left one of the Seedance account's slots (migration 0009): the dispatchers refill it
SLOTS_CHANNEL = "upstream_slots"
# a user's credits moved without a job's move (payload: the subject): their streams say so
BALANCES_CHANNEL = "credit_balances"
_BALANCE_NOTICES = "balance_notices"  # SQLite: the session's, published after its commit
RECONNECT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Notice:
    job_id: uuid.UUID
    event_id: int
    owner: str
    from_status: str | None = None  # None for a creation

    @property
    def leaves_the_line(self) -> bool:
        """The move takes a waiting job out of the queue (sent, canceled, failed)."""
        return self.from_status == JobStatus.QUEUED


class EventHub:
    """Inboxes by job id or by owner; `publish` reads the move once and fills them."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._by_job: defaultdict[uuid.UUID, set[Inbox]] = defaultdict(set)
        self._by_owner: defaultdict[str, set[Inbox]] = defaultdict(set)
        self._on_any: list[Callable[[], None]] = []
        self._on_slot: list[Callable[[], None]] = []
        self._on_notice: list[Callable[[Notice], None]] = []
        self._pending: list[Notice] = []
        self._reader: asyncio.Task[None] | None = None

    def on_any(self, wake: Callable[[], None]) -> None:
        """Call `wake` on every notice (a worker with work to do for each move)."""
        self._on_any.append(wake)

    @contextlib.contextmanager
    def _subscribe(
        self, table: defaultdict[Any, set[Inbox]], key: object, inbox: Inbox
    ) -> Iterator[None]:
        table[key].add(inbox)
        try:
            yield
        finally:
            table[key].discard(inbox)
            if not table[key]:
                del table[key]

    def for_job(self, job_id: uuid.UUID, inbox: Inbox) -> contextlib.AbstractContextManager[None]:
        return self._subscribe(self._by_job, job_id, inbox)

    def for_owner(self, owner: str, inbox: Inbox) -> contextlib.AbstractContextManager[None]:
        return self._subscribe(self._by_owner, owner, inbox)

    def _inboxes(self, job_id: uuid.UUID, owner: str) -> Iterator[Inbox]:
        yield from self._by_job.get(job_id, ())
        yield from self._by_owner.get(owner, ())

    def on_notice(self, note: Callable[[Notice], None]) -> None:
        """Call `note` with every notice (the queue board keeps places in line with them)."""
        self._on_notice.append(note)

    def on_slot_freed(self, wake: Callable[[], None]) -> None:
        """Call `wake` when a job leaves a slot of the Seedance account (its task ended,
        or its submission came back unsent), whichever replica saw it."""
        self._on_slot.append(wake)

    def slot_freed(self) -> None:
        for wake in self._on_slot:
            wake()

    def has_subscribers(self) -> bool:
        return bool(self._by_job or self._by_owner)

    def balance_changed(self, owner: str) -> None:
        for inbox in self._by_owner.get(owner, ()):
            inbox.push_balance()

    def push_queue_spot(self, spot: QueueSpot) -> None:
        for inbox in self._inboxes(spot.job_id, spot.owner):
            inbox.push_spot(spot)

    def wake_workers(self) -> None:
        for wake in self._on_any:
            wake()

    def resync(self) -> None:
        """Wake every worker and make every stream re-read once: notices may have been
        lost (the LISTEN connection was down)."""
        self.wake_workers()
        self.slot_freed()
        for table in (self._by_job, self._by_owner):
            for inboxes in table.values():
                for inbox in inboxes:
                    inbox.mark_stale()

    def publish(self, notice: Notice) -> None:
        self.wake_workers()
        for note in self._on_notice:
            note(notice)
        if next(self._inboxes(notice.job_id, notice.owner), None) is None:
            return  # nobody here follows it: nothing to read
        self._pending.append(notice)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_pending(), name="event-hub-reader")

    async def _read_pending(self) -> None:
        """Read the pending moves, all at once, and push each to its inboxes. Notices that
        arrive meanwhile wait for the next round (moves keep their order)."""
        while self._pending:
            notices, self._pending = self._pending, []
            try:
                async with self._sessionmaker() as session:
                    rows = (
                        await session.execute(
                            select(JobEvent, Job)
                            .join(Job, Job.id == JobEvent.job_id)
                            .where(JobEvent.id.in_([notice.event_id for notice in notices]))
                            .order_by(JobEvent.id)
                        )
                    ).all()
            except Exception:  # the database is away: its streams re-read when they can
                logger.warning("cannot read %d moves for live streams", len(notices), exc_info=True)
                for notice in notices:
                    for inbox in self._inboxes(notice.job_id, notice.owner):
                        inbox.mark_stale()
                continue
            for move, job in rows:
                item = FeedItem(move, job)
                for inbox in self._inboxes(job.id, job.owner):
                    inbox.push(item)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _parse(payload: str) -> Notice:
    data = orjson.loads(payload)
    return Notice(
        uuid.UUID(data["job_id"]), int(data["event_id"]), data["owner"], data.get("from_status")
    )


class PostgresListener:
    """One LISTEN connection per process, reconnecting after database restarts."""

    def __init__(self, settings: Settings, hub: EventHub) -> None:
        self._dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._hub = hub
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._hub.publish(_parse(payload))
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed %s notification", CHANNEL)

    async def _run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self._dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                logger.warning("event listener cannot connect (%s); retrying", type(exc).__name__)
            else:
                await self._listen(conn)
                logger.warning("event listener connection lost; reconnecting")
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        """Deliver notifications until the connection drops."""
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            await conn.add_listener(SLOTS_CHANNEL, lambda *_: self._hub.slot_freed())
            await conn.add_listener(
                BALANCES_CHANNEL, lambda *args: self._hub.balance_changed(args[-1])
            )
            self.listening.set()
            self._hub.resync()  # what moved while no connection listened was not notified
            await closed.wait()
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=1))


async def notify_balance_changed(session: AsyncSession, owner: str) -> None:
    """Tell `owner`'s live streams, once this transaction commits, that their credits
    moved (Postgres: a NOTIFY, delivered at commit; SQLite: published after it)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(BALANCES_CHANNEL, owner)))
    else:
        session.info.setdefault(_BALANCE_NOTICES, set()).add(owner)


def publish_after_commit(
    sessionmaker: async_sessionmaker[AsyncSession], hub: EventHub
) -> Callable[[], None]:
    """SQLite: publish the notices of each committed transaction in-process. Returns the
    function that detaches the hooks."""
    session_class = sessionmaker.kw["sync_session_class"]
    pending_key = "pending_notices"

    def collect(session: Session, _context: object) -> None:
        for obj in session.new:
            if isinstance(obj, JobEvent):
                job = session.identity_map.get(session.identity_key(Job, obj.job_id))
                if job is not None:
                    session.info.setdefault(pending_key, []).append(
                        Notice(obj.job_id, obj.id, job.owner, obj.from_status)
                    )

    def publish(session: Session) -> None:
        for notice in session.info.pop(pending_key, []):
            hub.publish(notice)
        for owner in session.info.pop(_BALANCE_NOTICES, ()):
            hub.balance_changed(owner)

    def forget(session: Session) -> None:
        session.info.pop(pending_key, None)
        session.info.pop(_BALANCE_NOTICES, None)

    hooks = (("after_flush", collect), ("after_commit", publish), ("after_rollback", forget))
    for name, hook in hooks:
        event.listen(session_class, name, hook)

    def detach() -> None:
        for name, hook in hooks:
            event.remove(session_class, name, hook)

    return detach
