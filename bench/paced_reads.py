"""`GET /jobs/{id}` below saturation while N jobs wait: what a read pays for a long queue.

For each N in `--waiting`: a fresh database with N queued jobs (no dispatcher: they stay),
the service in its own uvicorn process (one worker, production settings), reads of 2,000
of those jobs by their owners paced by wrk to `--rate` requests per second for
`--seconds`, `--runs` times; each run's p50 and p99, and the full garbage collections the
service ran meanwhile (from its `/metrics`). The queue board reads and orders every
waiting job for their places, so this is where its cost shows.

    .venv/bin/python -m bench.paced_reads --waiting 2000 10000 --rate 470 --runs 3
"""

import argparse
import asyncio
import re
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from app.identity.tokens import issue_token
from bench.api_throughput import USERS, line, seed_jobs, wrk
from bench.common import (
    RESULTS,
    SECRETS,
    migrated_database,
    print_table,
    server,
    service_env,
    write_results,
)
from testkit.harness import plain_settings

ADMIN_TOKEN = "bench-admin-token-" + "a" * 24


def full_collections(url: str) -> tuple[float, float]:
    """The service's full collections so far: how many, and their summed pause."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text

    def value(name: str) -> float:
        found = re.search(rf'^{name}{{generation="2"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    return value("seedance_gc_pause_seconds_count"), value("seedance_gc_pause_seconds_sum")


async def measure(waiting: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = plain_settings(**SECRETS)
    tokens = [f"Bearer {issue_token(settings, f'user-{i}')}" for i in range(USERS)]
    rows = []
    async with migrated_database("bench_paced") as url:
        engine = create_async_engine(url)
        readable = (await seed_jobs(engine, waiting, "queued"))[:2000]
        await engine.dispose()
        gets = [
            line("GET", f"/jobs/{job['id']}", tokens[int(job["owner"].split("-")[1])])
            for job in readable
        ]
        env = service_env(url, args.port, admin_token=ADMIN_TOKEN)
        with server("app.main:create_app", args.port, 1, env, RESULTS / "paced_reads.log") as ours:
            wrk(ours, gets, 2, args.connections)  # warm pools and caches
            for run in range(args.runs):
                count, paused = full_collections(ours)
                figures = wrk(ours, gets, args.seconds, args.connections, args.rate)
                count_after, paused_after = full_collections(ours)
                rows.append(
                    {
                        "waiting": waiting,
                        "run": run + 1,
                        "rps": figures["rps"],
                        "p50_ms": figures["p50_ms"],
                        "p99_ms": figures["p99_ms"],
                        "errors": figures["not_ok"],
                        "full_collections": int(count_after - count),
                        "their_pause_ms": round((paused_after - paused) * 1000),
                    }
                )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--rate", type=float, default=470.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--port", type=int, default=8720)
    args = parser.parse_args()
    rows = [row for waiting in args.waiting for row in await measure(waiting, args)]
    print_table(
        f"GET /jobs/{{id}} paced to {args.rate:g}/s, {args.seconds:g} s a run",
        list(rows[0]),
        [list(row.values()) for row in rows],
    )
    write_results("paced_reads", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    asyncio.run(main())
