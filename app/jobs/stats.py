"""Fleet-wide numbers for operators: states, success rate, completion times, spend,
and how outcomes were learned (callback health)."""

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Job
from app.jobs.budget import credits_committed_since, today_started_at
from app.jobs.states import EventSource, JobStatus
from app.media.states import MediaStatus

MAX_DURATION_SAMPLES = 100_000


@dataclass(frozen=True, slots=True)
class Stats:
    since: datetime
    jobs_by_status: dict[str, int]
    success_rate: float | None
    median_seconds_to_success: float | None
    p95_seconds_to_success: float | None
    credits_spent_today: int
    resolved_by: dict[str, int]
    callback_ratio: float | None
    media_mismatches: int


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


async def job_counts(session: AsyncSession, since: datetime | None = None) -> dict[str, int]:
    query = select(Job.status, func.count()).group_by(Job.status)
    if since is not None:
        query = query.where(Job.created_at >= since)
    return {status: count for status, count in (await session.execute(query)).all()}


async def compute(session: AsyncSession, since: datetime) -> Stats:
    """Over jobs created since `since` (spend: since the start of the UTC day)."""
    counts = await job_counts(session, since)
    finished = counts.get(JobStatus.SUCCEEDED, 0) + counts.get(JobStatus.FAILED, 0)
    rows = await session.execute(
        select(Job.created_at, Job.finished_at)
        .where(Job.status == JobStatus.SUCCEEDED, Job.created_at >= since)
        .order_by(Job.created_at.desc())
        .limit(MAX_DURATION_SAMPLES)
    )
    durations = sorted((done - created).total_seconds() for created, done in rows.all() if done)
    resolved = dict(
        (
            await session.execute(
                select(Job.resolved_by, func.count())
                .where(Job.resolved_by.is_not(None), Job.created_at >= since)
                .group_by(Job.resolved_by)
            )
        ).all()
    )
    by_callback = resolved.get(EventSource.WEBHOOK, 0)
    by_polling = resolved.get(EventSource.RECONCILER, 0)
    spent = await session.scalar(select(credits_committed_since(today_started_at())))
    mismatched = await session.scalar(
        select(func.count()).where(Job.media_mismatch.is_not(None), Job.created_at >= since)
    )
    return Stats(
        since=since,
        jobs_by_status=counts,
        success_rate=counts.get(JobStatus.SUCCEEDED, 0) / finished if finished else None,
        median_seconds_to_success=percentile(durations, 0.5),
        p95_seconds_to_success=percentile(durations, 0.95),
        credits_spent_today=int(spent or 0),
        resolved_by=resolved,
        callback_ratio=by_callback / (by_callback + by_polling)
        if by_callback + by_polling
        else None,
        media_mismatches=mismatched or 0,
    )


async def media_pending_purge(session: AsyncSession, owner: str) -> int:
    """The user's jobs whose stored objects still wait to be removed."""
    query = select(func.count()).where(Job.owner == owner, Job.media_status == MediaStatus.PURGING)
    return await session.scalar(query) or 0
