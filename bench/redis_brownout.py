"""A Redis brownout: Redis accepts connections and never answers. What `GET /jobs/{id}`
costs meanwhile, with the circuit breaker, next to the same service with Redis answering,
and with the breaker kept from opening (what every request paid before it existed).

One service process (production settings, Redis through a loopback proxy that the run
switches to "hang"), a job seeded for the user, --requests reads --concurrency at a time
per case (a tenth as many without the breaker: each waits the 2 s deadline); p50 and p99
of the responses, and how many Redis connections the proxy saw.

    .venv/bin/python -m bench.redis_brownout --requests 2000
"""

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.models import Job
from app.identity.tokens import issue_token
from bench.common import (
    RESULTS,
    SECRETS,
    insert_rows,
    migrated_database,
    percentile,
    print_table,
    server,
    service_env,
    write_results,
)
from testkit.databases import job_row
from testkit.harness import free_port, plain_settings
from testkit.tcp_proxy import TcpProxy

REDIS = ("127.0.0.1", 6379)
# (Redis hung, breaker failures); without the breaker every read waits the 2 s deadline,
# so that case reads a tenth as many times
CASES = {
    "Redis answering": (False, "3"),
    "Redis hung, breaker": (True, "3"),
    "Redis hung, no breaker (before)": (True, "1000000000"),
}


async def reads(url: str, path: str, token: str, count: int, concurrency: int) -> list[float]:
    """Latencies (ms) of `count` reads, `concurrency` at a time."""
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            response = await http.get(path, headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return latencies


async def measure(args: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {"requests": args.requests, "concurrency": args.concurrency}
    async with migrated_database("bench_brownout") as database_url:
        engine = create_async_engine(database_url)
        job = job_row(0, "reader", "running", datetime.now(UTC), "bench-brownout")
        async with engine.begin() as conn:
            await insert_rows(conn, Job, [job])
        await engine.dispose()
        token = issue_token(plain_settings(**SECRETS), "reader")
        for name, (hang, failures) in CASES.items():
            proxy = TcpProxy(*REDIS)
            await proxy.start()
            port = free_port()
            env = service_env(
                database_url,
                port,
                redis_url=f"redis://127.0.0.1:{proxy.port}/0",
                redis_breaker_failures=failures,
            )
            # the proxy runs in this loop: the service is started in a thread
            async with ServerInThread(env, port) as url:
                await reads(url, f"/jobs/{job['id']}", token, 50, 4)  # warm up, Redis answering
                proxy.hang = hang
                before = proxy.connections
                count = args.requests // 10 if hang and failures != "3" else args.requests
                latencies = await reads(url, f"/jobs/{job['id']}", token, count, args.concurrency)
                figures[name] = {
                    "reads": count,
                    "p50_ms": percentile(latencies, 50),
                    "p99_ms": percentile(latencies, 99),
                    "redis_connections": proxy.connections - before,
                }
            await proxy.cut()
    return figures


class ServerInThread:
    """`bench.common.server` (blocking) entered in a worker thread, so this event loop
    keeps running the proxy while the service starts."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self._context = server("app.main:create_app", port, 1, env, RESULTS / "redis_brownout.log")

    async def __aenter__(self) -> str:
        return await asyncio.to_thread(self._context.__enter__)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self._context.__exit__, None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    print_table(
        f"GET /jobs/{{id}}, {args.requests} reads, {args.concurrency} at a time",
        ["case", "reads", "p50 ms", "p99 ms", "Redis connections"],
        [
            [
                name,
                f["reads"],
                f"{f['p50_ms']:.1f}",
                f"{f['p99_ms']:.1f}",
                f["redis_connections"],
            ]
            for name, f in figures.items()
            if isinstance(f, dict)
        ],
    )
    write_results("redis_brownout", figures)


if __name__ == "__main__":
    main()
