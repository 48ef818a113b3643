"""Time to notify: from the moment the simulator sends a task's final callback to the
moment a browser-like client, streaming `GET /events` (SSE), receives the `succeeded`
move. Two service replicas on one Postgres: callbacks land on replica A, the streams are
open on replica B, so the figure includes the NOTIFY fan-out between replicas, and the
copy of the video into our storage, which comes before `succeeded`.

    .venv/bin/python -m bench.time_to_notify --jobs 300
"""

import argparse
import asyncio
import contextlib
import time
from typing import Any

import httpx
import orjson

from app.identity.tokens import issue_token
from bench.common import (
    RESULTS,
    SECRETS,
    migrated_database,
    percentile,
    print_table,
    server,
    service_env,
    write_results,
)
from simulator import SimulatorConfig, create_simulator
from testkit.harness import SEEDANCE_TEST_KEY, plain_settings, serve

USERS = 10


class Arrivals:
    """When each job's `succeeded` move reached a stream; `complete` once all have."""

    def __init__(self, expected: int) -> None:
        self.at: dict[str, float] = {}
        self.expected = expected
        self.complete = asyncio.Event()

    def note(self, job_id: str) -> None:
        self.at[job_id] = time.monotonic()
        if len(self.at) >= self.expected:
            self.complete.set()


async def stream(url: str, token: str, arrivals: Arrivals, ready: asyncio.Event) -> None:
    """Follow one user's jobs; note when each `succeeded` move arrives."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream("GET", f"{url}/events", headers=headers) as response,
    ):
        response.raise_for_status()
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                move = orjson.loads(line[5:])
                if move["to_status"] == "succeeded":
                    arrivals.note(move["job_id"])


async def main(args: Any) -> None:
    simulator = create_simulator(
        SimulatorConfig(
            api_key=SEEDANCE_TEST_KEY,
            task_seconds=args.render_seconds,
            reject_local_urls=False,
        )
    )
    settings = plain_settings(**SECRETS)
    tokens = [issue_token(settings, f"user-{i}") for i in range(USERS)]
    arrivals = Arrivals(args.jobs)
    log = RESULTS / "time_to_notify.log"
    async with serve(simulator) as sim_url, migrated_database("bench_notify") as url:
        live = {
            "seedance_api_key": SEEDANCE_TEST_KEY,
            "seedance_base_url": f"{sim_url}/v2",
            "dispatcher_enabled": "true",
            "dispatcher_submits_per_second": "1000",
            # a success is a move once the video is copied: the copy is part of the path
            "media_worker_enabled": "true",
            "media_trusted_origins": sim_url,
            "media_root": str(RESULTS / "time_to_notify-media"),
        }
        env_a = service_env(url, args.port, **live)
        env_b = service_env(url, args.port + 1, **live)
        with (
            server("app.main:create_app", args.port, 1, env_a, log) as replica_a,
            server("app.main:create_app", args.port + 1, 1, env_b, log) as replica_b,
        ):
            readies = [asyncio.Event() for _ in tokens]
            streams = [
                asyncio.create_task(stream(replica_b, token, arrivals, ready))
                for token, ready in zip(tokens, readies, strict=True)
            ]
            await asyncio.gather(*(ready.wait() for ready in readies))
            async with httpx.AsyncClient(base_url=replica_a, timeout=30) as http:
                for index in range(args.jobs):  # a steady trickle, not a burst
                    token = tokens[index % USERS]
                    response = await http.post(
                        "/jobs",
                        json={"prompt": f"variant {index}"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    response.raise_for_status()
                    await asyncio.sleep(1 / args.rate)
            with contextlib.suppress(TimeoutError):  # reported below as not notified
                await asyncio.wait_for(arrivals.complete.wait(), args.render_seconds + 30)
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)

    sim = simulator.state.sim
    job_of_task = {
        task_id: task.request["callback_url"].split("?")[0].rsplit("/", 1)[1]
        for task_id, task in sim.tasks.items()
    }
    delays = sorted(
        (arrivals.at[job_of_task[task_id]] - sent) * 1000
        for task_id, sent in sim.final_callback_at.items()
        if job_of_task[task_id] in arrivals.at
    )
    figures = {
        "jobs": args.jobs,
        "notified": len(delays),
        "p50_ms": round(percentile(delays, 50), 1),
        "p99_ms": round(percentile(delays, 99), 1),
        "max_ms": round(delays[-1], 1),
    }
    print_table(
        f"Callback on replica A -> SSE event on replica B ({args.jobs} jobs, {args.rate:g}/s)",
        list(figures),
        [list(figures.values())],
    )
    write_results("time_to_notify", {"args": vars(args), **figures})
    assert len(delays) == args.jobs, "some moves never reached the stream"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50, help="jobs created per second")
    parser.add_argument("--render-seconds", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=8720)
    asyncio.run(main(parser.parse_args()))
