"""EXPLAIN ANALYZE of every list and claim query, as the service really issues them.

Seeds a database (50,000 jobs over 500 users, in every state), runs the service's own
code paths (client and admin lists, budget usage, dispatcher and reconciler claims, live
feeds), captures the SQL they send, and prints each plan: every one must use an index.

    .venv/bin/python -m bench.explain
"""

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.config import Settings
from app.db.models import Job, JobEvent
from app.jobs import budget, service
from app.jobs.dispatcher import Dispatcher
from app.jobs.events import EventHub
from app.jobs.feed import job_feed, owner_feed
from app.jobs.inbox import Inbox
from app.jobs.reconciler import Reconciler
from app.jobs.states import JobStatus
from bench.common import insert_rows, job_row, migrated_database, write_results

JOBS, USERS = 50_000, 500
STATES = ["succeeded"] * 80 + ["failed"] * 8 + ["running"] * 6 + ["queued"] * 4 + ["canceled"] * 2


async def seed(sessionmaker: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    rng = random.Random(5)
    now = datetime.now(UTC)
    jobs, events = [], []
    for i in range(JOBS):
        status = rng.choice(STATES)
        created = now - timedelta(seconds=rng.randint(0, 30 * 86400))
        has_task = status in ("running", "succeeded") or (status == "failed" and i % 2)
        task_id = f"task-{i}" if has_task else None
        row = job_row(i, f"user-{rng.randrange(USERS)}", status, created, task_id)
        if status == "running":
            row["next_poll_at"] = created + timedelta(minutes=3)
        jobs.append(row)
        job_id = row["id"]
        events.append(
            {"job_id": job_id, "from_status": None, "to_status": "queued", "source": "api"}
        )
        if status != "queued":
            events.append(
                {"job_id": job_id, "from_status": "queued", "to_status": status, "source": "api"}
            )
    async with sessionmaker() as session, session.begin():
        await insert_rows(session, Job, jobs)
        await insert_rows(session, JobEvent, events)
        await session.execute(text("ANALYZE"))
    return jobs


async def main() -> None:
    async with migrated_database("bench_explain") as url:
        engine = create_async_engine(url)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        jobs = await seed(sessionmaker)
        settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
        owner, job = jobs[0]["owner"], jobs[0]
        task_id = next(row["upstream_task_id"] for row in jobs if row["upstream_task_id"])
        captured: list[tuple[str, str, Any]] = []
        current = [""]  # the case being run; nothing is captured outside one

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def capture(_conn, _cursor, statement, parameters, _context, many) -> None:  # type: ignore[no-untyped-def]
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
            ("dispatcher claim", lambda: Dispatcher(sessionmaker, None, None, settings)._claim(8)),  # type: ignore[arg-type]
            ("reconciler claim", lambda: Reconciler(sessionmaker, None, settings)._claim_due()),  # type: ignore[arg-type]
            (
                "reconciler deadlines",
                lambda: Reconciler(sessionmaker, None, settings)._expire_overdue(),
            ),  # type: ignore[arg-type]
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
        ]
        plans = {}
        for name, run in cases:
            current[0] = name
            await run()
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
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
    write_results("explain", {"jobs": JOBS, "users": USERS, "plans": plans})


if __name__ == "__main__":
    asyncio.run(main())
