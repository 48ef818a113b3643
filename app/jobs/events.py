"""Pub/sub of job state changes, for live streams (SSE).

On Postgres a trigger NOTIFYs every new `job_events` row at commit (migration 0002), and
each replica LISTENs on one dedicated connection, so a change made by any replica (a
callback landing on A) reaches streams open on every other (a client on B). On SQLite
(one process) the same notices are published in-process after each commit.

A notice says only which job moved and the event's id: subscribers read the events
themselves from the database, so nothing is lost between a notice and a reconnect.
"""

import asyncio
import contextlib
import logging
import random
import uuid
from asyncio import FIRST_COMPLETED
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import orjson
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Job, JobEvent

logger = logging.getLogger(__name__)
CHANNEL = "job_events"
RECONNECT_SECONDS = 1.0
QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Notice:
    job_id: uuid.UUID
    event_id: int
    owner: str


Subscription = contextlib.AbstractContextManager[asyncio.Queue[Notice]]
# no move: "re-read the database, you may have missed some" (feeds re-read on any notice)
RESYNC = Notice(uuid.UUID(int=0), 0, "")


class EventHub:
    """Subscriptions by job id or by owner; `publish` wakes the matching subscribers."""

    def __init__(self) -> None:
        self._by_job: defaultdict[uuid.UUID, set[asyncio.Queue[Notice]]] = defaultdict(set)
        self._by_owner: defaultdict[str, set[asyncio.Queue[Notice]]] = defaultdict(set)
        self._on_any: list[Callable[[], None]] = []

    def on_any(self, wake: Callable[[], None]) -> None:
        """Call `wake` on every notice (a worker with work to do for each move)."""
        self._on_any.append(wake)

    @contextlib.contextmanager
    def _subscribe(
        self, table: defaultdict[Any, set[asyncio.Queue[Notice]]], key: object
    ) -> Iterator[asyncio.Queue[Notice]]:
        queue: asyncio.Queue[Notice] = asyncio.Queue(QUEUE_SIZE)
        table[key].add(queue)
        try:
            yield queue
        finally:
            table[key].discard(queue)
            if not table[key]:
                del table[key]

    def for_job(self, job_id: uuid.UUID) -> Subscription:
        return self._subscribe(self._by_job, job_id)

    def for_owner(self, owner: str) -> Subscription:
        return self._subscribe(self._by_owner, owner)

    def resync(self) -> None:
        """Wake every subscriber and worker to re-read the database once: notices may have
        been lost (the LISTEN connection was down)."""
        for wake in self._on_any:
            wake()
        for table in (self._by_job, self._by_owner):
            for queues in table.values():
                for queue in queues:
                    with contextlib.suppress(asyncio.QueueFull):  # it re-reads anyway
                        queue.put_nowait(RESYNC)

    def publish(self, notice: Notice) -> None:
        for wake in self._on_any:
            wake()
        for queue in (*self._by_job.get(notice.job_id, ()), *self._by_owner.get(notice.owner, ())):
            with contextlib.suppress(asyncio.QueueFull):  # a stuck reader re-reads the DB anyway
                queue.put_nowait(notice)


def _parse(payload: str) -> Notice:
    data = orjson.loads(payload)
    return Notice(uuid.UUID(data["job_id"]), int(data["event_id"]), data["owner"])


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
            self.listening.set()
            self._hub.resync()  # what moved while no connection listened was not notified
            await closed.wait()
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=1))


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
                job = session.identity_map.get(session.identity_key(Job, obj.job_id))  # type: ignore[arg-type]
                if job is not None:
                    session.info.setdefault(pending_key, []).append(
                        Notice(obj.job_id, obj.id, job.owner)
                    )

    def publish(session: Session) -> None:
        for notice in session.info.pop(pending_key, []):
            hub.publish(notice)

    def forget(session: Session) -> None:
        session.info.pop(pending_key, None)

    hooks = (("after_flush", collect), ("after_commit", publish), ("after_rollback", forget))
    for name, hook in hooks:
        event.listen(session_class, name, hook)

    def detach() -> None:
        for name, hook in hooks:
            event.remove(session_class, name, hook)

    return detach


class Stop(Protocol):
    """Anything that can be awaited until a stream must end (sse-starlette's shutdown
    event, an asyncio.Event)."""

    def is_set(self) -> bool: ...

    async def wait(self) -> object: ...


async def next_notice(
    queue: asyncio.Queue[Notice], seconds: float, stop: Stop | None = None
) -> Notice | None:
    """The next notice, or None after about `seconds` or once `stop` is set (the caller
    re-reads the database either way). The wait is jittered (±25%): streams opened
    together would otherwise re-read together, a burst on the database every period."""
    seconds *= random.uniform(0.75, 1.25)  # noqa: S311 (spreading load, not a secret)
    getting = asyncio.ensure_future(queue.get())
    waiters = {getting}
    if stop is not None:
        waiters.add(asyncio.ensure_future(stop.wait()))
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=FIRST_COMPLETED)
    finally:  # also when the stream itself is cancelled (the client went away)
        for waiter in waiters:
            waiter.cancel()  # no-op when done; a cancelled get() takes nothing from the queue
    return getting.result() if getting in done else None
