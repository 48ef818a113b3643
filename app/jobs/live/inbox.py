"""One live stream's inbox: the moves its replica's event hub reads once and pushes to
every stream that follows the job or its owner, and the jobs' latest places in the queue.

Bounded: a reader too slow to take what arrives is not buffered without end. Its inbox
drops what it holds and turns stale, and the stream re-reads what it missed from the
database (every move is there), so a slow reader costs only itself. Waiting needs no
task: one future, resolved by a push or by the heartbeat's timer.
"""

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from app.db.models import Job, JobEvent

CAPACITY = 64  # moves; a stream this far behind re-reads instead


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One recorded move and the job as it was read with it."""

    event: JobEvent
    job: Job


@dataclass(frozen=True, slots=True)
class QueueSpot:
    """Where a waiting job stands in the queue (app/jobs/live/queue_board.py)."""

    job_id: uuid.UUID
    owner: str
    position: int  # jobs the scheduler would send before this one
    estimated_start_at: datetime | None  # None: no render measured yet


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    """The owner's credits moved (a job's hold or settlement, a grant, a top-up, an
    expiry): the stream reads the balance and says it, once however often it moved."""


class Inbox:
    __slots__ = ("_balance", "_items", "_spots", "_waiter", "closed", "stale")

    def __init__(self) -> None:
        self._items: deque[FeedItem] = deque()
        self._spots: dict[uuid.UUID, QueueSpot] = {}  # the latest of each job only
        self._balance = False  # the owner's credits moved (said once, however often)
        self._waiter: asyncio.Future[None] | None = None
        self.stale = False  # moves may have been missed: re-read the database
        self.closed = False  # the client went away or the server is stopping: end

    def push(self, item: FeedItem) -> None:
        if self.stale:
            return  # it re-reads anyway
        if len(self._items) >= CAPACITY:
            self.mark_stale()
            return
        self._items.append(item)
        self._wake()

    def push_spot(self, spot: QueueSpot) -> None:
        self._spots[spot.job_id] = spot
        self._wake()

    def push_balance(self) -> None:
        self._balance = True
        self._wake()

    def take_balance(self) -> bool:
        changed, self._balance = self._balance, False
        return changed

    def take_spots(self) -> list[QueueSpot]:
        spots = list(self._spots.values())
        self._spots.clear()
        return spots

    def mark_stale(self) -> None:
        self.stale = True
        self._items.clear()
        self._wake()

    def close(self) -> None:
        """End the stream: its client went away, or the server is stopping (the client
        resumes elsewhere with Last-Event-ID)."""
        self.closed = True
        self._wake()

    def take(self) -> list[FeedItem]:
        items = list(self._items)
        self._items.clear()
        return items

    def take_stale(self) -> bool:
        """Whether the stream must re-read; the flag is cleared (the re-read follows)."""
        stale, self.stale = self.stale, False
        return stale

    async def wait(self, seconds: float) -> bool:
        """Wait until something arrives (a move, a re-read, the close) or `seconds` pass;
        False when nothing came (time for a heartbeat)."""
        if self._items or self._spots or self._balance or self.stale or self.closed:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return bool(self._items or self._spots or self._balance or self.stale or self.closed)

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)
