"""What the queue costs as it grows: a claim (`scheduler.pick`, what every dispatcher round
runs) and a full reading of the order (`scheduler.queue_order`, what the queue board runs
for places in line), at N waiting jobs, on a fresh Postgres database.

For each N: the median and worst of repeated claims and readings, a reading split into its
database part and its ordering, and the longest the event loop went without running while
a reading ran (a 1 ms ticker beside it): what a request served by the same loop waits
(the reading hands the loop back every `READ_IN_STEPS` jobs). Then what a request pays
between readings, in microseconds: a job's place (a read), a newcomer's (a create's
answer) and a job leaving (sent or canceled). The start-up objects are frozen out of the
garbage collector first, as the service does once it is ready.

    .venv/bin/python -m bench.queue_reading --waiting 2000 10000 100000
"""

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app.db.models import Job
from app.identity.plans import Plans
from app.jobs import scheduler
from app.jobs.queue_view import QueueView, Waiting
from app.ops.garbage_collection import freeze_startup_objects
from bench.common import insert_rows, migrated_database, print_table, write_results
from testkit.databases import job_row
from testkit.harness import plain_settings

OWNERS = 200  # a few heavy users and many light ones (a Zipf-like share of the jobs)


def owner_of(rng: random.Random) -> str:
    return f"user-{min(int(rng.paretovariate(1.2)) - 1, OWNERS - 1)}"


async def seed(url: str, waiting: int) -> None:
    engine = create_async_engine(url)
    rng = random.Random(waiting)
    start = datetime.now(UTC) - timedelta(hours=1)
    rows = [
        job_row(i, owner_of(rng), "queued", start + timedelta(milliseconds=i))
        for i in range(waiting)
    ]
    running = [job_row(i, owner_of(rng), "running", start, f"bench-{i}") for i in range(4)]
    for row in running:
        row["submit_started_at"] = start
    async with engine.begin() as conn:
        await insert_rows(conn, Job.__table__, [*rows, *running])
        await conn.exec_driver_sql("ANALYZE jobs")
    await engine.dispose()


async def longest_stall(work: Any) -> tuple[Any, float]:
    """Run `work` beside a 1 ms ticker; the longest gap between ticks, in ms."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now - last) * 1000)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        result = await work
    finally:
        done.set()
        await ticker
    return result, max(gaps, default=0.0)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def per_operation(view: QueueView, plans: Plans, count: int) -> dict[str, float]:
    """Microseconds per place, per newcomer and per leaver, over `count` of each."""
    rng = random.Random(count)
    present = [job.id for job in view.order()]
    now = datetime.now(UTC)
    newcomers = [Waiting(uuid.uuid4(), owner_of(rng), None, now) for _ in range(count)]
    weight = plans.named(None).queue_weight
    timings = {}
    began = time.perf_counter()
    for job_id in rng.sample(present, count):
        view.place_of(job_id)
    timings["place_us"] = time.perf_counter() - began
    began = time.perf_counter()
    for job in newcomers:
        view.admit(job, weight)
    timings["newcomer_us"] = time.perf_counter() - began
    began = time.perf_counter()
    for job_id in rng.sample(present, count):
        view.leave(job_id)
    timings["leaver_us"] = time.perf_counter() - began
    return {name: round(seconds * 1e6 / count, 1) for name, seconds in timings.items()}


async def measure(waiting: int, rounds: int) -> dict[str, Any]:
    async with migrated_database("bench_queue") as url:
        await seed(url, waiting)
        settings = plain_settings(database_url=url, seedance_max_concurrent_tasks=8)
        plans = Plans(settings)
        engine = create_async_engine(url)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        claims, readings, database, stalls = [], [], [], []
        try:
            for _ in range(rounds):
                async with sessionmaker() as session, session.begin():
                    began = time.perf_counter()
                    await scheduler.pick(session, settings, plans, 8)
                    claims.append(time.perf_counter() - began)
                async with sessionmaker() as session:
                    began = time.perf_counter()
                    now = datetime.now(UTC)
                    await scheduler.candidates(session, now, None)
                    database.append(time.perf_counter() - began)
                async with sessionmaker() as session:
                    began = time.perf_counter()
                    view, stall = await longest_stall(
                        scheduler.queue_order(session, settings, plans)
                    )
                    readings.append(time.perf_counter() - began)
                    stalls.append(stall)
                    assert len(view) == waiting
            operations = per_operation(view, plans, min(1000, waiting // 2))
        finally:
            await engine.dispose()
    return {
        "waiting": waiting,
        "claim_p50_ms": ms(statistics.median(claims)),
        "claim_max_ms": ms(max(claims)),
        "reading_p50_ms": ms(statistics.median(readings)),
        "reading_max_ms": ms(max(readings)),
        "reading_rows_read_p50_ms": ms(statistics.median(database)),
        "loop_stall_p50_ms": round(statistics.median(stalls), 1),
        "loop_stall_max_ms": round(max(stalls), 1),
        **operations,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[2000, 10000, 100000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    freeze_startup_objects()
    results = [await measure(n, args.rounds) for n in args.waiting]
    headers = list(results[0])
    print_table("the queue's cost by waiting jobs", headers, [list(r.values()) for r in results])
    write_results("queue_reading", {"rounds": args.rounds, "results": results})


if __name__ == "__main__":
    asyncio.run(main())
