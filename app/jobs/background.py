"""The shared shape of the service's background loops (dispatcher, reconciler).

A loop runs `run_once()` every `interval` seconds, or sooner when woken; an error in one
round is logged and the next round goes on, so a database blip never kills the loop.
Stopping is graceful: the current round finishes (a round is never cut between a claim
and the work it claimed), then `drain()` waits for work the round started.
"""

import asyncio
import contextlib
import logging

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
