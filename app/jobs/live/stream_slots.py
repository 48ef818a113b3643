"""How many live streams this replica holds open, per user and in all.

A stream holds a connection (a file descriptor) for as long as the client wants, so one
client could otherwise open them until the replica has none left. A slot is taken before
the response starts (past a cap the answer is a problem, not a stream) and given back
when the stream ends, however it ends: the stream's own `finally`, or, for a stream that
never started, when its generator is collected.
"""

import weakref
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from app.kit.errors import ProblemError
from app.ops.metrics import SSE_STREAMS_OPEN, SSE_STREAMS_REFUSED

Item = TypeVar("Item")


class StreamSlots:
    def __init__(self, per_user: int, per_replica: int) -> None:
        self.per_user = per_user
        self.per_replica = per_replica
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._open.total()

    def hold(self, subject: str, stream: AsyncIterator[Item]) -> AsyncGenerator[Item, None]:
        """`stream`, holding one of `subject`'s slots until it ends; a ProblemError now if
        none is free (429 for the user's cap, 503 for the replica's: another replica may
        have room)."""
        if self.open >= self.per_replica:
            SSE_STREAMS_REFUSED.labels("replica").inc()
            raise ProblemError(
                503,
                "too_many_streams_on_replica",
                "This replica holds as many live streams as it may; retry (another replica "
                "may take it).",
                headers={"Retry-After": "5"},
            )
        if self._open[subject] >= self.per_user:
            SSE_STREAMS_REFUSED.labels("user").inc()
            raise ProblemError(
                429,
                "too_many_streams",
                f"You have {self.per_user} live streams open; close one first (one "
                "GET /events stream follows all your jobs).",
                headers={"Retry-After": "5"},
            )
        self._open[subject] += 1
        SSE_STREAMS_OPEN.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                SSE_STREAMS_OPEN.dec()
                self._open[subject] -= 1
                if self._open[subject] <= 0:
                    del self._open[subject]

        async def held() -> AsyncGenerator[Item, None]:
            try:
                async for item in stream:
                    yield item
            finally:
                release()

        generator = held()
        weakref.finalize(generator, release)
        return generator
