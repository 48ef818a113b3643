"""Outbound webhooks: how fast the service delivers job outcomes to a product's server, and
how long after a job's move its webhook arrives.

A local receiver verifies every delivery with `standardwebhooks`; one endpoint subscribes
to `job.failed`. Jobs are finished by their Seedance callbacks (FAILED reports, so no media
copy is in the way). Three phases of --jobs jobs each, against one service process:

* the outbox's cost: callbacks per second into a service without the worker, with no
  endpoint enabled (the triggers write nothing) and with one, alternated twice;
* draining a backlog: those moves, recorded without the worker, are delivered by a
  service with it: deliveries per second, first arrival to last;
* a burst: callbacks posted --callback-concurrency at a time to the running service,
  which receives them and delivers at once: deliveries per second (first move to last
  arrival), and the delay from each move (the payload's `timestamp`, taken when the move
  was recorded) to its arrival, p50 and p99;
* paced: --paced-rate moves per second, below capacity: the same delay.

Baseline, same run, same receiver: a plain client signing as many payloads with
`standardwebhooks` and POSTing them OUTBOUND_ENDPOINT_CONCURRENCY at a time, with no
database: what the receiver and the signing allow on this machine.

    .venv/bin/python -m bench.webhook_delivery --jobs 1000
"""

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from standardwebhooks import Webhook

from app.config import Settings
from app.db.models import Job
from app.jobs.callbacks import callback_signature
from app.outbound.signing import new_secret
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
from testkit.harness import free_port, plain_settings, serve
from testkit.webhook_receiver import Receiver

ADMIN_TOKEN = "bench-admin-" + "a" * 30


def failed_report(task_id: str) -> bytes:
    return orjson.dumps(
        {"code": 200, "data": {"task_id": task_id, "status": "FAILED", "error_message": "bench"}}
    )


async def baseline(url: str, receiver: Receiver, count: int, concurrency: int) -> float:
    """Deliveries per second of a bare signer and sender to the same receiver."""
    secret = new_secret()
    receiver.secrets = [secret]
    receiver.received.clear()
    signer = Webhook(secret)
    body = orjson.dumps({"type": "job.failed", "data": {"job": {"id": "x" * 36}}}).decode()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            msg_id, now = f"msg_{i}", datetime.now(UTC)
            headers = {
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(msg_id, now, body),
                "content-type": "application/json",
            }
            (await http.post(url, content=body, headers=headers)).raise_for_status()

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    assert len(receiver.accepted()) == count
    return count / (time.monotonic() - started)


@dataclass
class Service:
    """The service under test, with what finishing its jobs needs."""

    url: str
    http: httpx.AsyncClient
    settings: Settings
    engine: AsyncEngine

    async def running_jobs(self, count: int) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = [
            job_row(i, f"user-{i % 10}", "running", now, f"bench-{uuid.uuid4().hex}")
            for i in range(count)
        ]
        async with self.engine.begin() as conn:
            await insert_rows(conn, Job, rows)
        return rows

    async def finish(self, job: dict[str, Any]) -> None:
        """Seedance's FAILED callback for the job: its move to `failed` (no media copy)."""
        sig = callback_signature(self.settings, job["id"])
        response = await self.http.post(
            f"/webhooks/seedance/{job['id']}?sig={sig}",
            content=failed_report(job["upstream_task_id"]),
        )
        response.raise_for_status()

    async def finish_all(self, jobs: list[dict[str, Any]], concurrency: int) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)

        async def worker() -> None:
            while not queue.empty():
                await self.finish(queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def finish_paced(self, jobs: list[dict[str, Any]], rate: float) -> None:
        started = time.monotonic()
        tasks = []
        for index, job in enumerate(jobs):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            tasks.append(asyncio.create_task(self.finish(job)))
        await asyncio.gather(*tasks)


@asynccontextmanager
async def service(database_url: str, log: str, **overrides: str) -> AsyncIterator[Service]:
    port = free_port()
    env = service_env(
        database_url,
        port,
        environment="dev",  # production refuses loopback endpoints: the receiver is local
        admin_token=ADMIN_TOKEN,
        **overrides,
    )
    settings = plain_settings(**SECRETS)
    engine = create_async_engine(database_url)
    try:
        with server("app.main:create_app", port, 1, env, RESULTS / log) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                yield Service(url, http, settings, engine)
    finally:
        await engine.dispose()


async def delivered(receiver: Receiver, count: int) -> None:
    deadline = time.monotonic() + 600
    while len(receiver.unique()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(receiver.unique())} of {count} delivered")
        await asyncio.sleep(0.02)


def delays_ms(receiver: Receiver) -> list[float]:
    """From each move (the payload's timestamp, taken when it was recorded) to its arrival."""
    return [
        (d.arrived_at - datetime.fromisoformat(d.payload["timestamp"]).timestamp()) * 1000
        for d in receiver.unique().values()
    ]


async def measure(args: Any) -> dict[str, Any]:
    receiver = Receiver()
    figures: dict[str, Any] = {"jobs": args.jobs, "endpoint_concurrency": args.endpoint_concurrency}
    workers = {
        "outbound_enabled": "true",
        "outbound_endpoint_concurrency": str(args.endpoint_concurrency),
    }
    async with (
        migrated_database("bench_webhooks") as database_url,
        serve(receiver.app()) as receiver_url,
    ):
        hook = f"{receiver_url}/hook"
        figures["baseline_per_second"] = await baseline(
            hook, receiver, args.jobs, args.endpoint_concurrency
        )
        receiver.received.clear()
        # the outbox's cost on the move path: callbacks/s with no endpoint enabled (the
        # triggers write nothing) and with one (each move writes its outbox row), alternated;
        # the moves recorded with the endpoint enabled are the backlog drained next
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        rates: dict[bool, list[float]] = {False: [], True: []}
        async with service(database_url, "webhook_delivery.log", outbound_enabled="false") as quiet:
            created = await quiet.http.post(
                "/admin/webhook-endpoints",
                json={"url": hook, "events": ["job.failed"]},
                headers=admin,
            )
            created.raise_for_status()
            endpoint = f"/admin/webhook-endpoints/{created.json()['id']}"
            receiver.secrets = [created.json()["secret"]]
            for enabled in (False, True, False, True):
                patched = await quiet.http.patch(endpoint, json={"enabled": enabled}, headers=admin)
                patched.raise_for_status()
                jobs = await quiet.running_jobs(args.jobs)
                started = time.monotonic()
                await quiet.finish_all(jobs, args.callback_concurrency)
                rates[enabled].append(args.jobs / (time.monotonic() - started))
        figures["moves_per_second_without_endpoint"] = rates[False]
        figures["moves_per_second_with_endpoint"] = rates[True]
        backlog = 2 * args.jobs
        async with service(database_url, "webhook_delivery.log", **workers) as svc:
            await delivered(receiver, backlog)
            arrivals = sorted(d.arrived_at for d in receiver.accepted())
            figures["drain_per_second"] = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])

            # a burst: the jobs finish as fast as their callbacks come
            receiver.received.clear()
            jobs = await svc.running_jobs(args.jobs)
            started = time.time()
            await svc.finish_all(jobs, args.callback_concurrency)
            figures["burst_moves_per_second"] = args.jobs / (time.time() - started)
            await delivered(receiver, args.jobs)
            last = max(d.arrived_at for d in receiver.accepted())
            figures["burst_per_second"] = args.jobs / (last - started)
            burst = delays_ms(receiver)
            figures["burst_delay_p50_ms"] = percentile(burst, 50)
            figures["burst_delay_p99_ms"] = percentile(burst, 99)

            # paced: moves at a steady rate below capacity
            receiver.received.clear()
            await svc.finish_paced(await svc.running_jobs(args.jobs), args.paced_rate)
            await delivered(receiver, args.jobs)
            paced = delays_ms(receiver)
            figures["paced_rate"] = args.paced_rate
            figures["paced_delay_p50_ms"] = percentile(paced, 50)
            figures["paced_delay_p99_ms"] = percentile(paced, 99)
    figures["duplicates"] = len(receiver.accepted()) - len(receiver.unique())
    figures["unverified"] = sum(not d.verified_by for d in receiver.received)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--endpoint-concurrency", type=int, default=4)
    parser.add_argument("--callback-concurrency", type=int, default=32)
    parser.add_argument("--paced-rate", type=float, default=100.0, help="moves per second")
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    base = figures["baseline_per_second"]
    print_table(
        f"webhook delivery to one local endpoint, {args.jobs} jobs per phase",
        ["phase", "deliveries/s", "of baseline", "move→delivery p50 ms", "p99 ms"],
        [
            ["bare signer + client (baseline)", f"{base:.0f}", "100%", "", ""],
            [
                "draining a backlog",
                f"{figures['drain_per_second']:.0f}",
                f"{figures['drain_per_second'] / base:.0%}",
                "",
                "",
            ],
            [
                f"burst ({figures['burst_moves_per_second']:.0f} moves/s)",
                f"{figures['burst_per_second']:.0f}",
                f"{figures['burst_per_second'] / base:.0%}",
                f"{figures['burst_delay_p50_ms']:.0f}",
                f"{figures['burst_delay_p99_ms']:.0f}",
            ],
            [
                f"paced ({args.paced_rate:.0f} moves/s)",
                "",
                "",
                f"{figures['paced_delay_p50_ms']:.1f}",
                f"{figures['paced_delay_p99_ms']:.1f}",
            ],
        ],
    )
    without = ", ".join(f"{r:.0f}" for r in figures["moves_per_second_without_endpoint"])
    with_one = ", ".join(f"{r:.0f}" for r in figures["moves_per_second_with_endpoint"])
    print(f"callbacks/s, no endpoint enabled: {without}; one endpoint (outbox written): {with_one}")
    print(f"duplicates: {figures['duplicates']}, unverified: {figures['unverified']}")
    write_results("webhook_delivery", figures)


if __name__ == "__main__":
    main()
