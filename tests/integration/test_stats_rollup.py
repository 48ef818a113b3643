"""`/admin/stats` from summed hours: the same figures as counting every job, an hour
summed only once all of its jobs have finished, and each hour summed once."""

import asyncio
import math
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.db.models import Job, JobStatsHour
from app.jobs.stats import HOUR, Stats, StatsRollup, compute, job_counts
from testkit.harness import make_settings

NOW = datetime.now(UTC)


def job(rng: random.Random, created: datetime, status: str) -> Job:
    has_task = status != "canceled"
    finished = created + timedelta(seconds=rng.randint(20, 900))
    return Job(
        id=uuid.uuid4(),
        owner=f"user-{rng.randrange(5)}",
        model="seedance-2-mini",
        prompt="a boat",
        duration=5,
        resolution="720p",
        aspect_ratio="16:9",
        estimated_cost=10,
        status=status,
        upstream_task_id=f"task-{uuid.uuid4()}" if has_task else None,
        resolved_by=rng.choice(["webhook", "reconciler"]) if status != "canceled" else None,
        media_mismatch="duration" if status == "succeeded" and rng.random() < 0.1 else None,
        created_at=created,
        updated_at=created,
        finished_at=finished if status in ("succeeded", "failed", "canceled") else None,
    )


def exact(jobs: list[Job], since: datetime) -> dict[str, object]:
    """The figures counted job by job, as /admin/stats did before hours were summed."""
    window = [j for j in jobs if j.created_at >= since]
    succeeded = sorted(
        (j.finished_at - j.created_at).total_seconds()
        for j in window
        if j.status == "succeeded" and j.finished_at
    )

    def nearest_rank(fraction: float) -> float:
        return succeeded[max(1, math.ceil(fraction * len(succeeded))) - 1]

    counts: dict[str, int] = {}
    for j in window:
        counts[j.status] = counts.get(j.status, 0) + 1
    return {
        "jobs_by_status": counts,
        "resolved_by": dict(
            sorted(
                {
                    source: sum(1 for j in window if j.resolved_by == source)
                    for source in {j.resolved_by for j in window if j.resolved_by}
                }.items()
            )
        ),
        "media_mismatches": sum(1 for j in window if j.media_mismatch),
        "median": nearest_rank(0.5),
        "p95": nearest_rank(0.95),
    }


def assert_same(stats: Stats, expected: dict[str, object]) -> None:
    assert stats.jobs_by_status == expected["jobs_by_status"]
    assert dict(sorted(stats.resolved_by.items())) == expected["resolved_by"]
    assert stats.media_mismatches == expected["media_mismatches"]
    # a histogram of 5% wide buckets: the geometric middle is within 2.5%
    assert stats.median_seconds_to_success == pytest.approx(expected["median"], rel=0.026)
    assert stats.p95_seconds_to_success == pytest.approx(expected["p95"], rel=0.026)


async def test_summed_hours_give_the_figures_of_every_job(
    database_url: str, db_engine: AsyncEngine
) -> None:
    rng = random.Random(3)
    jobs = [
        job(rng, NOW - timedelta(hours=h, minutes=rng.randint(0, 59)), status)
        for h in (40, 30, 26, 12, 5, 3, 0)
        for status in rng.choices(["succeeded", "failed", "canceled"], [8, 1, 1], k=30)
    ]
    stuck = job(rng, NOW - timedelta(hours=4, minutes=30), "running")  # holds its hour back
    jobs.append(stuck)
    sessionmaker = async_sessionmaker(db_engine, expire_on_commit=False)
    async with sessionmaker() as session, session.begin():
        session.add_all(jobs)
    rollup = StatsRollup(sessionmaker, make_settings(database_url))

    summed = await rollup.run_once()
    async with sessionmaker() as session:
        hours = list(await session.scalars(select(JobStatsHour.hour).order_by(JobStatsHour.hour)))
    first = min(j.created_at for j in jobs).replace(minute=0, second=0, microsecond=0)
    assert hours == [first + HOUR * i for i in range(summed)]  # contiguous, oldest first
    assert hours[-1] + HOUR == stuck.created_at.replace(minute=0, second=0, microsecond=0)
    assert await rollup.run_once() == 0  # nothing more until the running job finishes

    for since in (NOW - timedelta(hours=48), NOW - timedelta(hours=27, minutes=17)):
        async with sessionmaker() as session:
            assert_same(await compute(session, since), exact(jobs, since))

    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id == stuck.id)
            .values(status="failed", finished_at=NOW, resolved_by="webhook")
        )
    stuck.status, stuck.finished_at, stuck.resolved_by = "failed", NOW, "webhook"
    assert await rollup.run_once() > 0  # the hours it held back, up to the last hour or so
    async with sessionmaker() as session:
        assert_same(
            await compute(session, NOW - timedelta(hours=48)),
            exact(jobs, NOW - timedelta(hours=48)),
        )
        all_time = await job_counts(session)
    assert all_time == exact(jobs, NOW - timedelta(days=365))["jobs_by_status"]


async def test_replicas_racing_sum_each_hour_once(
    database_url: str, db_engine: AsyncEngine
) -> None:
    rng = random.Random(4)
    sessionmaker = async_sessionmaker(db_engine, expire_on_commit=False)
    async with sessionmaker() as session, session.begin():
        session.add_all(job(rng, NOW - timedelta(hours=h), "succeeded") for h in range(2, 30))
    settings = make_settings(database_url)
    rollups = [StatsRollup(sessionmaker, settings) for _ in range(3)]
    for _ in range(3):  # a round that lost a race stops; the next goes on
        await asyncio.gather(*(rollup.run_once() for rollup in rollups))
    async with sessionmaker() as session:
        hours = await session.scalar(select(func.count()).select_from(JobStatsHour))
        counted = await job_counts(session)
    assert hours >= 28  # every hour with a job (and the empty hour after, once it settled)
    assert counted == {"succeeded": 28}  # none counted twice
