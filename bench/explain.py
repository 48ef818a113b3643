"""EXPLAIN ANALYZE of every hot query, as the service really issues them.

Seeds a database with `--jobs` jobs (50,000 by default; 10,000,000 for a quarter of a
product making 100,000 videos a day) over one user per 100 jobs (at least 500), created
over 90 days: older than an hour they are finished (90% succeeded, 8% failed, 2%
canceled), younger ones are also queued and running; two moves each. Rows go in by
binary COPY with the secondary indexes dropped and rebuilt after (as pg_restore does),
so ten million take minutes. Then it runs the service's own code paths (client and admin
lists, budget usage, dispatcher and reconciler claims, live feeds, `/admin/stats` for
24 h), captures the SQL they send, and prints each plan with its time.

    .venv/bin/python -m bench.explain --jobs 10000000
"""

import argparse
import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.config import Settings
from app.jobs import budget, service, stats
from app.jobs.dispatcher import Dispatcher
from app.jobs.live.events import EventHub
from app.jobs.live.feed import job_feed, owner_feed
from app.jobs.live.inbox import Inbox
from app.jobs.reconciler import Reconciler
from app.jobs.states import JobStatus
from bench.common import migrated_database, write_results
from testkit.databases import job_row
from testkit.harness import plain_settings

SPAN = timedelta(days=90)
# a collaborator the measured statement never reaches (claims read and write rows only)
UNUSED: Any = None
FINISHED = ["succeeded"] * 90 + ["failed"] * 8 + ["canceled"] * 2
RECENT = ["queued"] * 30 + ["running"] * 50 + ["succeeded"] * 15 + ["failed"] * 5
CHUNK = 100_000
JOB_COLUMNS = [
    *job_row(0, "", "queued", datetime.now(UTC)).keys(),
    *("images", "reference_video_urls", "reference_audio_urls"),
    *("submit_attempts", "status_polls", "media_attempts", "media_status"),
    *("finished_at", "next_poll_at", "resolved_by"),
]
EVENT_COLUMNS = ["job_id", "from_status", "to_status", "source", "at"]


def seeded_jobs(jobs: int, users: int) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """Each job's row (in JOB_COLUMNS order) and its moves, oldest job first (event ids
    follow time, as in the service)."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    for i in range(jobs):
        created = now - SPAN + SPAN * (i / jobs)
        recent = now - created < timedelta(hours=1)
        status = rng.choice(RECENT if recent else FINISHED)
        has_task = status in ("running", "succeeded") or (status == "failed" and i % 2)
        row = job_row(i, f"user-{rng.randrange(users)}", status, created, None)
        row["id"] = uuid.UUID(int=rng.getrandbits(128), version=4)
        row["upstream_task_id"] = f"task-{i}" if has_task else None
        row["submitted_at"] = created if has_task else None
        finished = created + timedelta(seconds=rng.randint(40, 400))
        done = status in ("succeeded", "failed", "canceled")
        values = [
            *row.values(),
            *("[]", "[]", "[]"),
            *(1 if has_task else 0, 0, 1 if status == "succeeded" else 0),
            "stored" if status == "succeeded" else None,
            finished if done else None,
            created + timedelta(minutes=3) if status == "running" else None,
            ("webhook" if rng.random() < 0.95 else "reconciler") if has_task and done else None,
        ]
        moves: list[tuple[Any, str | None, str, str, datetime]] = [
            (row["id"], None, "queued", "api", created)
        ]
        if status != "queued":
            moves.append((row["id"], "queued", status, "api", finished if done else created))
        yield tuple(values), moves


async def seed(dsn: str, jobs: int, users: int) -> list[dict[str, Any]]:
    """COPY the rows in; the secondary indexes are dropped first and rebuilt after, and
    triggers (the NOTIFY of every move, the foreign keys) are off for this session.
    Returns the first jobs' rows, for the cases to ask about."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET session_replication_role = replica")
        indexes = await conn.fetch(
            "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS ddl "
            "FROM pg_index i WHERE i.indrelid IN ('jobs'::regclass, 'job_events'::regclass) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        )
        for index in indexes:
            await conn.execute(f"DROP INDEX {index['name']}")
        sample: list[dict[str, Any]] = []
        rows = seeded_jobs(jobs, users)
        while True:
            job_chunk, move_chunk = [], []
            for values, moves in rows:
                job_chunk.append(values)
                move_chunk += moves
                if len(job_chunk) == CHUNK:
                    break
            if not job_chunk:
                break
            if len(sample) < 100:
                sample += [dict(zip(JOB_COLUMNS, v, strict=True)) for v in job_chunk[:100]]
            await conn.copy_records_to_table("jobs", records=job_chunk, columns=JOB_COLUMNS)
            await conn.copy_records_to_table(
                "job_events", records=move_chunk, columns=EVENT_COLUMNS
            )
        for index in indexes:
            await conn.execute(index["ddl"])
        await conn.execute("VACUUM ANALYZE jobs")
        await conn.execute("VACUUM ANALYZE job_events")
    finally:
        await conn.close()
    return sample


async def main(jobs: int) -> None:
    async with migrated_database("bench_explain") as url:
        users = max(500, jobs // 100)
        began = time.perf_counter()
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        sample = await seed(dsn, jobs, users)
        seeded_seconds = time.perf_counter() - began
        print(f"seeded {jobs:,} jobs over {users:,} users in {seeded_seconds:.0f} s")
        engine = create_async_engine(url)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        settings = plain_settings(database_url=url)
        owner, job = sample[0]["owner"], sample[0]
        task_id = next(row["upstream_task_id"] for row in sample if row["upstream_task_id"])
        captured: list[tuple[str, str, Any]] = []
        current = [""]  # the case being run; nothing is captured outside one

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def capture(_conn, _cursor, statement, parameters, _context, many) -> None:  # type: ignore[no-untyped-def]  # SQLAlchemy event hook
            if current[0] and statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
                captured.append((current[0], statement, parameters[0] if many else parameters))

        async def in_session(fn: Callable[[AsyncSession], Awaitable[Any]]) -> None:
            async with sessionmaker() as session:
                await fn(session)
                await session.rollback()

        async def list_page(filters: service.JobFilter, cursor: str | None = None) -> str | None:
            async with sessionmaker() as session:
                _, next_cursor = await service.list_jobs(session, filters, limit=20, cursor=cursor)
            return next_cursor

        async def first(feed: Any) -> None:
            await anext(feed)
            await feed.aclose()

        cursor = await list_page(service.JobFilter(owner=owner))
        hub = EventHub(sessionmaker)
        stats_timings = await time_stats(sessionmaker, settings)
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            (
                "GET /jobs (first page)",
                lambda: list_page(service.JobFilter(owner=owner)),
            ),
            (
                "GET /jobs (next page)",
                lambda: list_page(service.JobFilter(owner=owner), cursor),
            ),
            (
                "GET /jobs?status=",
                lambda: list_page(
                    service.JobFilter(owner=owner, status=JobStatus.RUNNING),
                ),
            ),
            ("GET /jobs/{id}", lambda: in_session(lambda s: service.get_job(s, owner, job["id"]))),
            (
                "GET /admin/jobs (all users)",
                lambda: list_page(service.JobFilter()),
            ),
            (
                "GET /admin/jobs?status=",
                lambda: list_page(service.JobFilter(status=JobStatus.FAILED)),
            ),
            (
                "GET /admin/jobs?created_after=",
                lambda: list_page(
                    service.JobFilter(created_after=datetime.now(UTC) - timedelta(hours=1)),
                ),
            ),
            (
                "GET /admin/jobs?upstream_task_id=",
                lambda: list_page(
                    service.JobFilter(upstream_task_id=task_id),
                ),
            ),
            (
                "budget (every create), GET /me/usage",
                lambda: in_session(lambda s: budget.usage(s, owner)),
            ),
            (
                "dispatcher claim",
                lambda: Dispatcher(sessionmaker, UNUSED, UNUSED, settings, UNUSED)._claim(8),
            ),
            ("reconciler claim", lambda: Reconciler(sessionmaker, UNUSED, settings)._claim_due()),
            (
                "reconciler deadlines",
                lambda: Reconciler(sessionmaker, UNUSED, settings)._expire_overdue(),
            ),
            (
                "GET /jobs/{id}/events",
                lambda: first(
                    job_feed(
                        sessionmaker, hub, job["id"], Inbox(), after_event_id=0, heartbeat_seconds=1
                    )
                ),
            ),
            (
                "GET /events",
                lambda: first(
                    owner_feed(
                        sessionmaker, hub, owner, Inbox(), after_event_id=0, heartbeat_seconds=1
                    )
                ),
            ),
            (
                "GET /admin/stats (24 h)",
                lambda: in_session(
                    lambda s: stats.compute(s, datetime.now(UTC) - timedelta(hours=24))
                ),
            ),
        ]
        plans: dict[str, list[dict[str, Any]]] = {}
        for name, run in cases:
            current[0] = name
            await run()
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            for name, statement, parameters in captured:
                plan = await driver.fetch(f"EXPLAIN ANALYZE {statement}", *(parameters or ()))
                lines = [row[0] for row in plan]
                plans.setdefault(name, []).append(
                    {"sql": " ".join(statement.split()), "plan": lines}
                )
                print(f"\n-- {name}\n{' '.join(statement.split())[:300]}")
                print("\n".join(f"   {line}" for line in lines))
        await engine.dispose()
    seq_scans = {
        name
        for name, found in plans.items()
        for plan in found
        if any("Seq Scan on jobs" in step for step in plan["plan"])
    }
    print(f"\nqueries with a sequential scan of jobs: {sorted(seq_scans) or 'none'}")
    print(f"\n{'case':<40} {'ms':>9}  scans")
    for name, found in plans.items():
        for plan in found:
            scans = sorted({_scan(step) for step in plan["plan"] if " Scan " in step})
            executed = next(step for step in plan["plan"] if step.startswith("Execution Time"))
            milliseconds = float(executed.split(":")[1].split()[0])
            print(f"{name:<40} {milliseconds:>9.3f}  {'; '.join(scans)}")
    print("\n/admin/stats, counting every job of the window, then from summed hours:")
    for row in stats_timings:
        print(row)
    write_results(
        "explain",
        {
            "jobs": jobs,
            "users": users,
            "seconds_to_seed": round(seeded_seconds),
            "stats": stats_timings,
            "plans": plans,
        },
    )


async def time_stats(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> list[dict[str, Any]]:
    """`/admin/stats` for 24 h and 31 days counting every job of the window (no hour summed
    yet, as before the rollup), then the rollup's first run over the whole table, then
    the same windows read from the summed hours."""

    async def stats_ms(hours: float) -> float:
        async with sessionmaker() as session:
            began = time.perf_counter()
            await stats.compute(session, datetime.now(UTC) - timedelta(hours=hours))
            return round((time.perf_counter() - began) * 1000, 1)

    rows = [{"window_h": h, "every_job_ms": await stats_ms(h)} for h in (24, 744)]
    began = time.perf_counter()
    summed = await stats.StatsRollup(sessionmaker, settings).run_once()
    rollup_s = round(time.perf_counter() - began, 1)
    for row in rows:
        row |= {"summed_hours_ms": await stats_ms(row["window_h"]), "rollup_first_run_s": rollup_s}
        row["hours_summed"] = summed
    return rows


def _scan(step: str) -> str:
    """ "Index Scan Backward using ix_jobs_created on jobs  (cost=...)" -> up to "on jobs"."""
    return step.split("->")[-1].split("(")[0].strip()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().jobs))
