"""What a retention sweep does to a big `job_events` table, and to the moves written meanwhile.

Seeds a database server-side (generate_series; `--jobs` jobs, half of them 60 days old,
four moves each), then runs the service's RetentionSweeper with EVENTS_RETENTION_DAYS=30
while a writer records a move every 10 ms (as job moves do), and prints: rows and table
size before, after the sweep and after a plain VACUUM; the sweep's time and batches; the
longest batch (the longest any lock it takes is held); and the writer's latency during
the sweep next to its latency before it, measured in the same run.

    .venv/bin/python -m bench.retention --jobs 250000
"""

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.db.models import Job
from app.jobs.retention import RetentionSweeper
from bench.common import migrated_database, percentile, write_results
from testkit.databases import job_row
from testkit.harness import plain_settings

MOVES_PER_JOB = 4


async def seed(engine: AsyncEngine, jobs: int) -> None:
    async with engine.begin() as conn:
        template = job_row(0, "user-0", "succeeded", datetime.now(UTC))
        await conn.execute(insert(Job), [template])
        columns = [
            row[0]
            for row in await conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'jobs' ORDER BY ordinal_position"
                )
            )
        ]
        age = "(CASE WHEN g % 2 = 0 THEN interval '60 days' ELSE interval '5 days' END)"
        computed = {
            "id": "gen_random_uuid()",
            "owner": "'user-' || (g % 1000)",
            "prompt": "'seeded ' || g",
            "created_at": f"now() - {age} - g * interval '1 millisecond'",
            "updated_at": f"now() - {age} - g * interval '1 millisecond'",
        }
        select_list = ", ".join(computed.get(c, f"t.{c}") for c in columns)
        copies = (  # the column names are our own schema's
            f"INSERT INTO jobs ({', '.join(columns)}) SELECT {select_list} "  # noqa: S608
            "FROM jobs t, generate_series(1, :copies) g WHERE t.id = :id"
        )
        await conn.execute(text(copies), {"id": template["id"], "copies": jobs - 1})
        # the old jobs' moves first: ids follow time, as in the service
        for older in (True, False):
            await conn.execute(
                text(
                    "INSERT INTO job_events (job_id, from_status, to_status, source, at) "
                    "SELECT j.id, NULL, 'queued', 'api', j.created_at + k * interval '1 second' "
                    "FROM jobs j, generate_series(1, :moves) k "
                    "WHERE (j.created_at < now() - interval '30 days') = :older"
                ),
                {"moves": MOVES_PER_JOB, "older": older},
            )
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))


async def table_state(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        rows = await conn.scalar(text("SELECT count(*) FROM job_events"))
        size = await conn.scalar(text("SELECT pg_total_relation_size('job_events')"))
    return {"rows": rows, "size_mb": round(size / 2**20, 1)}


async def write_moves(engine: AsyncEngine, stop: asyncio.Event, latencies: list[float]) -> None:
    """A move every 10 ms, each in its own transaction, on a job of today."""
    async with engine.connect() as conn:
        job_id = await conn.scalar(text("SELECT id FROM jobs ORDER BY created_at DESC LIMIT 1"))
        await conn.commit()
        while not stop.is_set():
            started = time.perf_counter()
            await conn.execute(
                text(
                    "INSERT INTO job_events (job_id, from_status, to_status, source, at) "
                    "VALUES (:job, 'queued', 'running', 'api', now())"
                ),
                {"job": job_id},
            )
            await conn.commit()
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)


def percentiles(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
        "n": len(values),
    }


async def main(jobs: int) -> None:
    async with migrated_database("bench_retention") as url:
        engine = create_async_engine(url, pool_size=4)
        started = time.perf_counter()
        await seed(engine, jobs)
        print(f"seeded {jobs:,} jobs in {time.perf_counter() - started:.0f} s")
        before = await table_state(engine)

        baseline: list[float] = []
        stop = asyncio.Event()
        writer = asyncio.create_task(write_moves(engine, stop, baseline))
        await asyncio.sleep(5)
        stop.set()
        await writer

        settings = plain_settings(database_url=url, events_retention_days=30)
        sweeper = RetentionSweeper(async_sessionmaker(engine), settings)
        batches: list[float] = []
        prune = sweeper._prune_events

        async def timed(cutoff: Any) -> tuple[int, bool]:
            began = time.perf_counter()
            try:
                return await prune(cutoff)
            finally:
                batches.append((time.perf_counter() - began) * 1000)

        sweeper._prune_events = timed  # type: ignore[method-assign]  # timed wraps it
        during: list[float] = []
        stop = asyncio.Event()
        writer = asyncio.create_task(write_moves(engine, stop, during))
        began = time.perf_counter()
        removed = await sweeper.run_once()
        sweep_seconds = time.perf_counter() - began
        stop.set()
        await writer
        after = await table_state(engine)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            began = time.perf_counter()
            await conn.execute(text("VACUUM job_events"))
            vacuum_seconds = time.perf_counter() - began
        vacuumed = await table_state(engine)
        await engine.dispose()

    figures: dict[str, Any] = {
        "jobs": jobs,
        "before": before,
        "after_sweep": after,
        "after_vacuum": vacuumed,
        "removed": removed,
        "sweep_seconds": round(sweep_seconds, 1),
        "vacuum_seconds": round(vacuum_seconds, 1),
        "batches": percentiles(batches),
        "writer_before": percentiles(baseline),
        "writer_during_sweep": percentiles(during),
    }
    print(
        f"job_events: {before['rows']:,} rows, {before['size_mb']} MB -> after the sweep "
        f"{after['rows']:,} rows, {after['size_mb']} MB -> after VACUUM {vacuumed['size_mb']} MB"
    )
    print(
        f"sweep: {removed:,} rows in {sweep_seconds:.1f} s, {figures['batches']['n']} batches, "
        f"batch p50 {figures['batches']['p50_ms']} ms, longest {figures['batches']['max_ms']} ms"
    )
    for name in ("writer_before", "writer_during_sweep"):
        print(f"{name}: {figures[name]}")
    write_results("retention", figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=250_000)
    asyncio.run(main(parser.parse_args().jobs))
