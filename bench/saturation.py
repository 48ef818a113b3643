"""Saturation: demand far above the Seedance account's concurrency, as a busy product has it.

An account that renders `--cap` tasks at once (the simulator answers 429 above it, with no
Retry-After); three heavy users start with ten jobs each (ten times the cap) and add one
each every `--every` seconds, and a new light user arrives with one job as often. The
demand is about three times what the account renders, for the equivalent of `--minutes`
minutes. Measured over that window, for each policy in the same run (each on a database
of its own):

- capacity used: the account's rendering time used for us / (cap x the window);
- 429s per accepted job;
- time from creation to acceptance, p50 and p99, of heavy and of light users' jobs (light
  jobs still waiting at the end count with their wait so far);
- Jain's fairness index of the jobs started across the heavy users (equal weights).

Policies: `fair` learning the cap from 429s (the default), `fair` with
SEEDANCE_MAX_CONCURRENT_TASKS set, and `fifo` learning it (oldest first, for comparison).
Time is scaled (`--time-scale`): renders, arrivals and the service's timers shrink alike.

    .venv/bin/python -m bench.saturation --time-scale 0.05
"""

import argparse
import asyncio
import time
from typing import Any

from sqlalchemy import select

from app.db.models import Job
from bench.common import migrated_database, percentile, print_table, write_results
from bench.upstream_cost import service_timers
from testkit.harness import Stack, running_stack

HEAVY = ("heavy-1", "heavy-2", "heavy-3")


def jain(values: list[int]) -> float | None:
    """Jain's fairness index: 1 when every share is equal, 1/n when one takes all."""
    total = sum(values)
    if not total:
        return None
    return total * total / (len(values) * sum(v * v for v in values))


def used_capacity(stack: Stack, start: float, end: float, cap: int) -> float:
    """The share of the account's slots that rendered for us within [start, end]."""
    render = stack.sim.config.task_seconds
    busy = sum(
        max(0.0, min(task.created + render, end) - max(task.created, start))
        for task in stack.sim.tasks.values()
    )
    return busy / (cap * (end - start))


async def demand(stack: Stack, args: Any, until: float) -> None:
    """Ten jobs per heavy user at once, then one per heavy user and one new light user
    every `--every` seconds."""
    await asyncio.gather(*(stack.create_job(user) for user in HEAVY for _ in range(10)))
    light = 0
    while time.monotonic() < until:
        await asyncio.sleep(args.every * args.time_scale)
        light += 1
        await asyncio.gather(
            *(stack.create_job(user) for user in HEAVY), stack.create_job(f"light-{light}")
        )


async def one_policy(name: str, overrides: dict[str, Any], args: Any) -> dict[str, Any]:
    scale = args.time_scale
    sim_config = {
        "task_seconds": args.render_seconds * scale,
        "max_concurrent_tasks": args.cap,
        "retry_after_seconds": None,
    }
    async with (
        migrated_database("seedance_bff_bench_saturation") as url,
        running_stack(
            url,
            sim_config=sim_config,
            dispatcher_enabled=True,
            reconciler_enabled=True,
            queue_probe_seconds=5 * scale,
            dispatcher_poll_seconds=min(1.0, 20 * scale),
            **service_timers(scale),
            **overrides,
        ) as stack,
    ):
        start = time.monotonic()
        end = start + args.minutes * 60 * scale
        await demand(stack, args, end)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        ended = time.monotonic()
        async with stack.app.state.services.sessionmaker() as session:
            jobs = list(await session.scalars(select(Job)))
        capacity = used_capacity(stack, start, ended, args.cap)
        calls = stack.sim.calls
    now = max(j.updated_at for j in jobs)

    def waits(prefix: str, include_waiting: bool) -> list[float]:
        return [
            ((j.submitted_at or now) - j.created_at).total_seconds() / scale
            for j in jobs
            if j.owner.startswith(prefix) and (j.submitted_at is not None or include_waiting)
        ]

    heavy, light = waits("heavy", False), waits("light", True)
    started = [sum(j.owner == user and j.submitted_at is not None for j in jobs) for user in HEAVY]
    accepted = calls["generate_accepted"]
    return {
        "policy": name,
        "jobs": len(jobs),
        "started": accepted,
        "failed": sum(j.status == "failed" for j in jobs),
        "capacity_used": round(capacity, 3),
        "429s_per_job": round(calls["generate_429"] / max(1, accepted), 2),
        "heavy_wait_p50": round(percentile(heavy, 50), 1) if heavy else None,
        "heavy_wait_p99": round(percentile(heavy, 99), 1) if heavy else None,
        "light_wait_p50": round(percentile(light, 50), 1) if light else None,
        "light_wait_p99": round(percentile(light, 99), 1) if light else None,
        "jain_heavy": round(jain(started) or 0, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=int, default=3, help="tasks the account renders at once")
    parser.add_argument("--render-seconds", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between arrivals")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args()
    policies = [
        ("fair, cap learned", {}),
        ("fair, cap set", {"seedance_max_concurrent_tasks": args.cap}),
        ("fifo, cap learned", {"queue_policy": "fifo"}),
    ]
    rows = [await one_policy(name, overrides, args) for name, overrides in policies]
    headers = list(rows[0])
    print_table(
        f"Saturation: cap {args.cap}, renders {args.render_seconds:g} s, {args.minutes:g} "
        f"minutes (x{args.time_scale:g}); waits in unscaled seconds",
        headers,
        [[row[h] for h in headers] for row in rows],
    )
    write_results("saturation", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    asyncio.run(main())
