"""Waiting for the next live notice: a notice, a stop, or a cancelled stream; nothing is
left behind and nothing is taken from the queue that is not returned."""

import asyncio
import uuid

from app.jobs.events import Notice, next_notice

NOTICE = Notice(uuid.uuid4(), 1, "alice")


def pending_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


async def test_a_notice_is_returned() -> None:
    queue: asyncio.Queue[Notice] = asyncio.Queue()
    queue.put_nowait(NOTICE)
    assert await next_notice(queue, 5, asyncio.Event()) == NOTICE


async def test_stop_ends_the_wait_and_takes_nothing() -> None:
    queue: asyncio.Queue[Notice] = asyncio.Queue()
    stop = asyncio.Event()
    before = pending_tasks()
    asyncio.get_running_loop().call_soon(stop.set)
    assert await next_notice(queue, 30, stop) is None
    await asyncio.sleep(0)  # let the cancelled waiters finish cancelling
    assert pending_tasks() == before
    queue.put_nowait(NOTICE)
    assert queue.get_nowait() == NOTICE  # no orphaned get() took it


async def test_a_cancelled_wait_leaves_no_task_behind() -> None:
    queue: asyncio.Queue[Notice] = asyncio.Queue()
    before = pending_tasks()
    waiting = asyncio.create_task(next_notice(queue, 30, asyncio.Event()))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await asyncio.sleep(0)
    assert pending_tasks() == before
    queue.put_nowait(NOTICE)
    assert queue.get_nowait() == NOTICE
