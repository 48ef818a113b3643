"""A request body read under deadlines: one that sends nothing for `idle` seconds, or is
still arriving after `total`, is cut with a 408. A client at 1 byte a second, or one that
stalls after a few megabytes, otherwise holds its connection, its slot and its staged bytes
for as long as it likes (issue 37: 40 stalled uploads held 1,160 MB of staging for minutes).
"""

import asyncio
from collections.abc import AsyncIterator

from app.kit.errors import ProblemError


async def within_deadlines(
    chunks: AsyncIterator[bytes], idle: float, total: float
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    ends = loop.time() + total
    while True:
        left = ends - loop.time()
        try:
            async with asyncio.timeout(min(idle, left)):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            said = (
                f"sent nothing for {idle:g} s"
                if idle < left
                else f"was still arriving after {total:g} s"
            )
            raise ProblemError(408, "body_timeout", f"The request body {said}.") from None
        yield chunk
