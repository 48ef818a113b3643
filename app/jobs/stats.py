"""Fleet-wide numbers for operators: states, success rate, completion times, time in the
queue, spend, and how outcomes were learned (callback health).

A window of days holds millions of jobs, so the figures are summed per hour of creation:
once every job of an hour has finished, `StatsRollup` writes the hour's sums to
`job_stats_hours`, and they never change again (a finished job makes no more moves). A
window then reads its summed hours and counts only the jobs of the hours not summed yet
(the partial hour it starts in, and the last hour or so). Times to success are kept as a
histogram of 5% wide buckets, so the median and p95 are exact to within 2.5%.
"""

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.models import Job, JobStatsHour
from app.jobs.budget import credits_committed_since, today_started_at
from app.jobs.states import TERMINAL, EventSource, JobStatus, MediaStatus
from app.kit.loops import Loop

HOUR = timedelta(hours=1)
# an hour is summed this long after it ended at the earliest: a job is written with the
# time its request came in, a moment before its transaction commits
SETTLE = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUCKET_BASE = 1.05  # bucket b holds times to success in [1.05^b, 1.05^(b+1)) seconds


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
    median_seconds_in_queue: float | None
    p95_seconds_in_queue: float | None


@dataclass(slots=True)
class Tally:
    """The sums of some jobs; tallies of disjoint sets of jobs add up."""

    jobs_by_status: Counter[str] = field(default_factory=Counter)
    resolved_by: Counter[str] = field(default_factory=Counter)
    media_mismatches: int = 0
    credits: int = 0
    success_seconds: Counter[str] = field(default_factory=Counter)  # bucket -> jobs
    queue_seconds: Counter[str] = field(default_factory=Counter)  # creation -> accepted

    def add(self, other: "Tally") -> None:
        self.jobs_by_status.update(other.jobs_by_status)
        self.resolved_by.update(other.resolved_by)
        self.media_mismatches += other.media_mismatches
        self.credits += other.credits
        self.success_seconds.update(other.success_seconds)
        self.queue_seconds.update(other.queue_seconds)

    @property
    def unfinished(self) -> int:
        return sum(n for status, n in self.jobs_by_status.items() if status not in TERMINAL)

    @classmethod
    def of_hour(cls, row: JobStatsHour) -> "Tally":
        return cls(
            Counter(row.jobs_by_status),
            Counter(row.resolved_by),
            row.media_mismatches,
            row.credits,
            Counter(row.success_seconds),
            Counter(row.queue_seconds),
        )

    def hour_row(self, hour: datetime) -> JobStatsHour:
        return JobStatsHour(
            hour=hour,
            jobs_by_status=dict(self.jobs_by_status),
            resolved_by=dict(self.resolved_by),
            media_mismatches=self.media_mismatches,
            credits=self.credits,
            success_seconds=dict(self.success_seconds),
            queue_seconds=dict(self.queue_seconds),
        )


def bucket(seconds: float) -> str:
    return str(max(0, math.floor(math.log(max(seconds, 1.0), BUCKET_BASE))))


def percentile(histogram: Counter[str], fraction: float) -> float | None:
    """Nearest-rank percentile of a histogram: the geometric middle of its bucket."""
    total = histogram.total()
    if not total:
        return None
    rank, seen = max(1, math.ceil(fraction * total)), 0
    for key in sorted(histogram, key=int):
        seen += histogram[key]
        if seen >= rank:
            return round(float(BUCKET_BASE ** (int(key) + 0.5)), 1)
    raise AssertionError("unreachable: the ranks add up to the total")


async def tally(
    session: AsyncSession, start: datetime, end: datetime | None, times: bool = True
) -> Tally:
    """The sums of the jobs created in [start, end) (no end: up to now and beyond);
    without `times`, no histogram of times to success (counts and credits only)."""
    created = [Job.created_at >= start] + ([Job.created_at < end] if end is not None else [])
    result = Tally()
    rows = await session.execute(
        select(
            Job.status,
            Job.resolved_by,
            func.count(),
            func.count(Job.media_mismatch),
            credits_committed_since(start),
        )
        .where(*created)
        .group_by(Job.status, Job.resolved_by)
    )
    for status, resolved_by, jobs, mismatches, credits in rows:
        result.jobs_by_status[status] += jobs
        if resolved_by is not None:
            result.resolved_by[resolved_by] += jobs
        result.media_mismatches += mismatches
        result.credits += credits
    if not times:
        return result
    succeeded = await session.execute(
        select(Job.created_at, Job.finished_at).where(*created, Job.status == JobStatus.SUCCEEDED)
    )
    for created_at, finished_at in succeeded:
        if finished_at is not None:
            result.success_seconds[bucket((finished_at - created_at).total_seconds())] += 1
    submitted = await session.execute(
        select(Job.created_at, Job.submitted_at).where(*created, Job.submitted_at.is_not(None))
    )
    for created_at, submitted_at in submitted:
        assert submitted_at is not None  # selected so
        result.queue_seconds[bucket((submitted_at - created_at).total_seconds())] += 1
    return result


def _hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


async def window(session: AsyncSession, since: datetime, times: bool = True) -> Tally:
    """The sums of the jobs created since `since`: its summed hours, and the jobs of the
    hours before and after them counted now (`times`: as in `tally`)."""
    first_hour = _hour_of(since) + (HOUR if _hour_of(since) < since else timedelta(0))
    hours = list(
        await session.scalars(
            select(JobStatsHour).where(JobStatsHour.hour >= first_hour).order_by(JobStatsHour.hour)
        )
    )
    if not hours:
        return await tally(session, since, None, times)
    # summed hours are contiguous (StatsRollup goes hour after hour)
    result = await tally(session, since, hours[0].hour, times)
    for hour in hours:
        result.add(Tally.of_hour(hour))
    result.add(await tally(session, hours[-1].hour + HOUR, None, times))
    return result


async def job_counts(session: AsyncSession) -> dict[str, int]:
    """Every job by status (the metrics' gauge), from the summed hours."""
    return dict((await window(session, EPOCH, times=False)).jobs_by_status)


async def compute(session: AsyncSession, since: datetime) -> Stats:
    """Over jobs created since `since` (spend: since the start of the UTC day)."""
    sums = await window(session, since)
    counts = dict(sums.jobs_by_status)
    finished = counts.get(JobStatus.SUCCEEDED, 0) + counts.get(JobStatus.FAILED, 0)
    by_callback = sums.resolved_by.get(EventSource.CALLBACK, 0)
    by_polling = sums.resolved_by.get(EventSource.RECONCILER, 0)
    return Stats(
        since=since,
        jobs_by_status=counts,
        success_rate=counts.get(JobStatus.SUCCEEDED, 0) / finished if finished else None,
        median_seconds_to_success=percentile(sums.success_seconds, 0.5),
        p95_seconds_to_success=percentile(sums.success_seconds, 0.95),
        credits_spent_today=(await window(session, today_started_at(), times=False)).credits,
        resolved_by=dict(sums.resolved_by),
        callback_ratio=by_callback / (by_callback + by_polling)
        if by_callback + by_polling
        else None,
        media_mismatches=sums.media_mismatches,
        median_seconds_in_queue=percentile(sums.queue_seconds, 0.5),
        p95_seconds_in_queue=percentile(sums.queue_seconds, 0.95),
    )


class StatsRollup(Loop):
    """Sums each hour once all of its jobs have finished, oldest first, never skipping
    one (an hour with a job still running waits, and so do the hours after it). Replicas
    may race to write an hour: the loser stops its round, the hour is written once."""

    name = "stats-rollup"

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        super().__init__(settings.stats_rollup_seconds)
        self._sessionmaker = sessionmaker

    async def _next_hour(self) -> datetime | None:
        async with self._sessionmaker() as session:
            last: datetime | None = await session.scalar(select(func.max(JobStatsHour.hour)))
            if last is not None:
                return last + HOUR
            first_job: datetime | None = await session.scalar(select(func.min(Job.created_at)))
        return None if first_job is None else _hour_of(first_job)

    async def run_once(self) -> int:
        hour, summed = await self._next_hour(), 0
        while hour is not None and hour + HOUR + SETTLE <= datetime.now(UTC):
            if self._stopping:
                break
            try:
                async with self._sessionmaker() as session, session.begin():
                    sums = await tally(session, hour, hour + HOUR)
                    if sums.unfinished:
                        break
                    session.add(sums.hour_row(hour))
            except IntegrityError:
                break  # another replica wrote it
            hour, summed = hour + HOUR, summed + 1
        return summed


async def media_pending_purge(session: AsyncSession, owner: str) -> int:
    """The user's jobs whose stored objects still wait to be removed."""
    query = select(func.count()).where(Job.owner == owner, Job.media_status == MediaStatus.PURGING)
    return await session.scalar(query) or 0
