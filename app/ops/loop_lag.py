"""How late the event loop runs a timer: the time every request and stream waits behind
work that holds the loop (a slow parse, a synchronous call). The worst since the last
scrape is what `/metrics` reports (seedance_event_loop_lag_seconds)."""

import asyncio
import contextlib

INTERVAL_SECONDS = 0.5


class LoopLag:
    def __init__(self) -> None:
        self._worst = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def take_worst(self) -> float:
        worst, self._worst = self._worst, 0.0
        return worst

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(INTERVAL_SECONDS)
            self._worst = max(self._worst, loop.time() - started - INTERVAL_SECONDS)
