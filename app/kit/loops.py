"""The shared shape of the service's background loops (dispatcher, reconciler, media).

A loop runs `run_once()` every `interval` seconds, or sooner when woken; an error in one
round is logged and the next round goes on, so a database blip never kills the loop.
Stopping is graceful: the current round finishes (a round is never cut between a claim
and the work it claimed), then `drain()` waits for work the round started.
"""

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class Loop:
    name = "loop"

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """One round of work; returns how much it did (for tests and logs)."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Finish work already started (called on stop, after the loop itself has ended)."""

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.drain()

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                await self.run_once()
            except Exception:
                logger.exception("%s round failed; retrying", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._interval)


def wake_if_running(loop: Loop | None) -> None:
    """Nudge a loop to look for work now, if this process runs it (None: another process
    does, and finds the work on its next round)."""
    if loop is not None:
        loop.wake()


class PooledLoop(Loop):
    """A loop whose rounds claim work and run each claimed item as a task of its own, at
    most `capacity` at once; a finished task frees its slot and wakes the loop."""

    def __init__(self, interval: float, capacity: int) -> None:
        super().__init__(interval)
        self._capacity = capacity
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def free_slots(self) -> int:
        return self._capacity - len(self._in_flight)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._in_flight.add(task)
        task.add_done_callback(self._release)

    def _release(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self.wake()  # a slot is free: more work may go

    async def drain(self) -> None:
        """Let claimed work finish, so its outcome is recorded."""
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
