"""`Coalescer`: concurrent callers share calls, each gets its own results or the call's error."""

import asyncio

import pytest

from app.kit.coalescing import Coalescer


async def settle() -> None:
    """Let every ready task run until each waits (a few turns of the loop, no time)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Dependency:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()

    async def send(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        await self.release.wait()
        if -1 in items:
            raise RuntimeError("refused")
        return [item * 10 for item in items]


async def test_a_lone_caller_goes_at_once_and_waiting_callers_leave_together() -> None:
    dependency = Dependency()
    coalescer = Coalescer(dependency.send, max_items=4, max_in_flight=1)
    first = asyncio.create_task(coalescer.submit([1]))
    await settle()
    assert dependency.calls == [[1]]  # nothing waited for company
    rest = [asyncio.create_task(coalescer.submit([n, n + 1])) for n in (2, 4, 6)]
    await settle()
    dependency.release.set()
    assert await first == [10]
    assert [await task for task in rest] == [[20, 30], [40, 50], [60, 70]]
    # the three waited while one call was out, then left in as few calls as fit 4 items
    assert dependency.calls == [[1], [2, 3, 4, 5], [6, 7]]


async def test_an_error_reaches_every_caller_of_its_call_and_no_other() -> None:
    dependency = Dependency()
    coalescer = Coalescer(dependency.send, max_items=4, max_in_flight=1)
    blocker = asyncio.create_task(coalescer.submit([0]))
    await settle()
    shared = [asyncio.create_task(coalescer.submit(items)) for items in ([-1], [5])]
    await settle()
    dependency.release.set()
    assert await blocker == [0]
    for task in shared:
        with pytest.raises(RuntimeError):
            await task
    assert await coalescer.submit([7]) == [70]


async def test_a_caller_that_gives_up_leaves_the_shared_call_to_the_others() -> None:
    dependency = Dependency()
    coalescer = Coalescer(dependency.send, max_items=4, max_in_flight=1)
    blocker = asyncio.create_task(coalescer.submit([0]))
    await settle()
    impatient = asyncio.create_task(coalescer.submit([1]))
    patient = asyncio.create_task(coalescer.submit([2]))
    await settle()
    impatient.cancel()
    dependency.release.set()
    assert (await blocker, await patient) == ([0], [20])
    assert impatient.cancelled()
    assert dependency.calls == [[0], [1, 2]]
