"""Long work on the event loop, in steps that leave the loop to the requests between them.

Handing the loop back with `sleep(0)` between steps is not enough: the step goes again on
the loop's next turn, and a request takes several turns (its database query, its rate
limit, its answer), so each request waited one step per turn (a reading of the queue at
10,000 jobs took a GET's p99 from 17 to 35 ms). After each step, a pause as long as the
step: the requests get at least half of the loop while the work goes on.
"""

import asyncio
import time


class Pacer:
    def __init__(self) -> None:
        self._step_began = time.perf_counter()

    async def pause(self) -> None:
        """End of a step: wait as long as it took, then time the next from now."""
        await asyncio.sleep(time.perf_counter() - self._step_began)
        self._step_began = time.perf_counter()
