"""A few slots shared fairly between users, with a bounded wait.

One user holds at most `per_key` slots at once; when a slot frees, it goes to the waiting
user who holds the fewest (a user holding none is served next), the oldest waiter of
theirs first: a per-user queue, not one global line, so one user's burst of slow work
never makes another user's single item wait behind it. A waiter gives up after its
`wait_seconds` (`SlotsBusy`), and a cancelled waiter leaves the line without taking a slot.
"""

import asyncio
import contextlib
import itertools
from collections import defaultdict, deque
from collections.abc import AsyncIterator


class SlotsBusy(Exception):
    """No slot came within the wait."""


class FairSlots:
    def __init__(self, slots: int, per_key: int) -> None:
        self.slots = slots
        self.per_key = per_key
        self._held: dict[str, int] = {}  # only keys holding a slot: nothing kept for others
        self._waiting: defaultdict[str, deque[tuple[int, asyncio.Future[None]]]] = defaultdict(
            deque
        )
        self._order = itertools.count()  # arrival order, for ties between users

    @property
    def in_use(self) -> int:
        return sum(self._held.values())

    def held_by(self, key: str) -> int:
        return self._held.get(key, 0)

    def waiting(self) -> int:
        return sum(len(line) for line in self._waiting.values())

    @contextlib.asynccontextmanager
    async def hold(self, key: str, wait_seconds: float) -> AsyncIterator[None]:
        await self._acquire(key, wait_seconds)
        try:
            yield
        finally:
            self._release(key)

    def _may_take(self, key: str) -> bool:
        return self.in_use < self.slots and self.held_by(key) < self.per_key

    async def _acquire(self, key: str, wait_seconds: float) -> None:
        if self._may_take(key) and not self._waiting.get(key):
            self._take(key)
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (next(self._order), granted)
        self._waiting[key].append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(granted), wait_seconds)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if granted.done() and not granted.cancelled():
                self._release(key)  # granted as the wait ended: handed on, not kept
            else:
                granted.cancel()
                self._leave(key, entry)
            if isinstance(exc, TimeoutError):
                raise SlotsBusy from None
            raise

    def _take(self, key: str) -> None:
        self._held[key] = self.held_by(key) + 1

    def _leave(self, key: str, entry: tuple[int, asyncio.Future[None]]) -> None:
        line = self._waiting.get(key)
        if line is not None:
            with contextlib.suppress(ValueError):
                line.remove(entry)
            if not line:
                del self._waiting[key]

    def _release(self, key: str) -> None:
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
        self._hand_on()

    def _hand_on(self) -> None:
        """Give free slots to the waiters who hold the fewest, oldest first."""
        while self.in_use < self.slots:
            eligible = [
                (self.held_by(key), line[0][0], key)
                for key, line in self._waiting.items()
                if line and self.held_by(key) < self.per_key
            ]
            if not eligible:
                return
            _, _, key = min(eligible)
            _, granted = self._waiting[key].popleft()
            if not self._waiting[key]:
                del self._waiting[key]
            self._take(key)
            granted.set_result(None)
