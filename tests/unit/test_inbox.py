"""A live stream's inbox: bounded, woken without helper tasks, stale past its capacity."""

import asyncio
import uuid

from app.db.models import Job, JobEvent
from app.jobs.live.inbox import CAPACITY, FeedItem, Inbox


def item(event_id: int) -> FeedItem:
    job_id = uuid.uuid4()
    return FeedItem(JobEvent(id=event_id, job_id=job_id, to_status="queued"), Job(id=job_id))


def tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks()


async def test_a_push_wakes_the_waiting_stream_without_a_task_of_its_own() -> None:
    inbox = Inbox()
    before = tasks()
    waiting = asyncio.ensure_future(inbox.wait(30))
    await asyncio.sleep(0)
    assert tasks() - before == {waiting}  # the wait itself: no helper task beside it
    inbox.push(item(1))
    assert await waiting is True
    assert [i.event.id for i in inbox.take()] == [1]
    assert inbox.take() == []


async def test_nothing_for_a_while_is_a_heartbeat() -> None:
    assert await Inbox().wait(0.01) is False


async def test_a_reader_that_falls_behind_turns_stale_and_holds_nothing() -> None:
    inbox = Inbox()
    for event_id in range(CAPACITY):
        inbox.push(item(event_id))
    assert not inbox.stale
    inbox.push(item(CAPACITY))
    assert inbox.stale and inbox.take() == []
    inbox.push(item(CAPACITY + 1))  # it re-reads anyway: nothing is kept meanwhile
    assert inbox.take() == []
    assert await inbox.wait(30) is True
    assert inbox.take_stale() is True
    assert inbox.take_stale() is False


async def test_closing_ends_a_waiting_stream() -> None:
    inbox = Inbox()
    waiting = asyncio.ensure_future(inbox.wait(30))
    await asyncio.sleep(0)
    inbox.close()  # the client went away, or the server is stopping
    assert await waiting is True and inbox.closed
