"""Items from concurrent callers sent to a dependency together, so a busy process makes
one call where it would make many (an HTTP client's own cost per call is several ms of
CPU here: bench/moderation.py).

A call goes at once while fewer than `max_in_flight` are out, so a quiet process waits
for nothing; past that, the items wait and leave together with the next free call, at
most `max_items` in one. Each caller gets the results of its own items, in order, or the
call's exception. A caller that gives up (a deadline) does not cancel the call others
share.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_items: int,
        max_in_flight: int,
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._max_in_flight = max_in_flight
        self._waiting: list[tuple[list[Item], asyncio.Future[list[Result]]]] = []
        self._calls: set[asyncio.Task[None]] = set()

    async def submit(self, items: list[Item]) -> list[Result]:
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        self._pump()
        return await asyncio.shield(future)

    def _pump(self) -> None:
        while self._waiting and len(self._calls) < self._max_in_flight:
            batch = [self._waiting.pop(0)]
            count = len(batch[0][0])
            while self._waiting and count + len(self._waiting[0][0]) <= self._max_items:
                count += len(self._waiting[0][0])
                batch.append(self._waiting.pop(0))
            call = asyncio.create_task(self._call(batch))
            self._calls.add(call)
            call.add_done_callback(self._finished)

    def _finished(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._pump()

    async def _call(self, batch: list[tuple[list[Item], asyncio.Future[list[Result]]]]) -> None:
        try:
            results = await self._send([item for items, _ in batch for item in items])
            if len(results) != sum(len(items) for items, _ in batch):
                raise ValueError("the answer does not match the items sent")
        except Exception as exc:  # every caller of the call gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for items, future in batch:
            if not future.done():
                future.set_result(results[start : start + len(items)])
            start += len(items)
