"""Live feeds of job state changes, read from `job_events` and woken by the event hub.

Each item is one recorded move plus the job as it is now. Event ids are the
`job_events` ids (monotonic), so a client that reconnects with Last-Event-ID gets
exactly the moves it has not seen.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import Job, JobEvent
from app.jobs.events import EventHub, Stop, next_notice
from app.jobs.states import is_terminal

PAGE = 500


@dataclass(frozen=True, slots=True)
class FeedItem:
    event: JobEvent
    job: Job


async def job_feed(
    sessionmaker: async_sessionmaker[AsyncSession],
    hub: EventHub,
    job_id: uuid.UUID,
    *,
    after_event_id: int | None,
    recheck_seconds: float,
    stop: Stop | None = None,
) -> AsyncIterator[FeedItem]:
    """Moves of one job after `after_event_id` (without it: its latest move first), until
    the job is terminal or `stop` is set (the server is shutting down: the client resumes
    elsewhere with Last-Event-ID). The caller has checked that the job is the client's."""
    with hub.for_job(job_id) as queue:  # subscribe before reading: no gap
        last = after_event_id
        if last is None:
            async with sessionmaker() as session:
                latest = await session.scalar(
                    select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id)
                )
            last = (latest or 0) - 1
        while True:
            async with sessionmaker() as session:
                events = list(
                    await session.scalars(
                        select(JobEvent)
                        .where(JobEvent.job_id == job_id, JobEvent.id > last)
                        .order_by(JobEvent.id)
                        .limit(PAGE)
                    )
                )
                job = await session.get(Job, job_id)
            assert job is not None
            for event in events:
                yield FeedItem(event, job)
                last = event.id
            if is_terminal(job.status) and len(events) < PAGE:
                return
            if len(events) < PAGE:
                await next_notice(queue, recheck_seconds, stop)
            if stop is not None and stop.is_set():
                return


async def latest_event_id(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """The id of the latest move of any job: a feed after it starts "from now on"."""
    async with sessionmaker() as session:
        return await session.scalar(select(func.max(JobEvent.id))) or 0


async def owner_feed(
    sessionmaker: async_sessionmaker[AsyncSession],
    hub: EventHub,
    owner: str,
    *,
    after_event_id: int,
    recheck_seconds: float,
    stop: Stop | None = None,
) -> AsyncIterator[FeedItem]:
    """Every move of the owner's jobs after `after_event_id` (`latest_event_id()`: from now
    on), until `stop` is set."""
    with hub.for_owner(owner) as queue:
        last = after_event_id
        while True:
            async with sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(JobEvent, Job)
                        .join(Job, Job.id == JobEvent.job_id)
                        .where(Job.owner == owner, JobEvent.id > last)
                        .order_by(JobEvent.id)
                        .limit(PAGE)
                    )
                ).all()
            for event, job in rows:
                yield FeedItem(event, job)
                last = event.id
            if len(rows) < PAGE:
                await next_notice(queue, recheck_seconds, stop)
            if stop is not None and stop.is_set():
                return
