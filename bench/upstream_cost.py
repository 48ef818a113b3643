"""Upstream cost: Seedance calls (generate + status) per successful job.

Our service (callbacks, with the reconciler polling only overdue jobs) with 0%, 20% and
50% of callbacks lost, and with each success confirmed by a status call (the default),
next to the usual public client pattern measured in the same run
on the same simulator: submit, then poll status every 5 s until the task is done.

Time is scaled (`--time-scale`): renders, poll intervals and every service timer shrink
by the same factor, so call counts are those of real time, in seconds of wall clock.

    .venv/bin/python -m bench.upstream_cost --jobs 200
"""

import argparse
import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import func, select

from app.db.models import Job
from bench.common import migrated_database, print_table, write_results
from simulator import SimulatorConfig, create_simulator
from testkit.harness import SEEDANCE_TEST_KEY, running_stack, serve, wait_until

USERS = 20
DURATION = 8  # the suggested Mini duration


def service_timers(scale: float) -> dict[str, Any]:
    """The service's default safety-net timers, scaled like the simulated renders."""
    return {
        "callback_overdue_base_seconds": 120 * scale,
        "callback_overdue_per_video_second": 10 * scale,
        "reconciler_poll_seconds": 5 * scale,
        "reconciler_backoff_initial_seconds": 15 * scale,
        "reconciler_backoff_max_seconds": 600 * scale,
        "job_hard_deadline_seconds": 3600 * scale,
        "submit_unknown_grace_seconds": 900 * scale,
    }


async def through_service(
    database_url: str, jobs: int, loss: float, confirm: bool, args: Any
) -> dict[str, Any]:
    sim_config = {
        "task_seconds": args.render_seconds * args.time_scale,
        "callback_loss_rate": loss,
        "seed": args.seed,
    }
    async with running_stack(
        database_url,
        sim_config=sim_config,
        dispatcher_enabled=True,
        reconciler_enabled=True,
        dispatcher_max_in_flight=32,
        dispatcher_submits_per_second=500,
        reconciler_status_rate_per_second=500,
        confirm_success_with_status=confirm,
        **service_timers(args.time_scale),
    ) as stack:
        started = time.monotonic()
        for batch in range(0, jobs, 50):
            await asyncio.gather(
                *(
                    stack.create_job(f"user-{i % USERS}", prompt=f"variant {i}", duration=DURATION)
                    for i in range(batch, min(jobs, batch + 50))
                )
            )

        async def finished() -> bool:
            async with stack.app.state.services.sessionmaker() as session:
                done = await session.scalar(
                    select(func.count()).where(Job.status.in_(("succeeded", "failed")))
                )
            return done == jobs

        await wait_until(finished, within=3600 * args.time_scale + 60, interval=0.1)
        elapsed = time.monotonic() - started
        succeeded = sum(job.status == "succeeded" for job in await stack.jobs())
        calls = stack.sim.calls
        await stack.app.state.services.rate_limits.windows.reset()
    return {
        "client": f"seedance-bff, {loss:.0%} callbacks lost"
        + (", success confirmed" if confirm else ""),
        "jobs": jobs,
        "succeeded": succeeded,
        "generate": calls["generate"],
        "status": calls["status"],
        "callbacks_lost": len(stack.sim.lost_callbacks),
        "calls_per_success": round((calls["generate"] + calls["status"]) / succeeded, 3),
        "wall_seconds": round(elapsed, 1),
    }


async def polling_client(jobs: int, args: Any) -> dict[str, Any]:
    """The usual public pattern: submit without a callback, poll every 5 s until done."""
    simulator = create_simulator(
        SimulatorConfig(
            api_key=SEEDANCE_TEST_KEY,
            task_seconds=args.render_seconds * args.time_scale,
            seed=args.seed,
        )
    )
    interval = 5 * args.time_scale
    succeeded = 0
    async with serve(simulator) as url:
        headers = {"Authorization": f"Bearer {SEEDANCE_TEST_KEY}"}
        async with httpx.AsyncClient(base_url=f"{url}/v2", headers=headers, timeout=30) as http:

            async def one(index: int) -> None:
                nonlocal succeeded
                body = {"model": "seedance-2-mini", "prompt": f"variant {index}"}
                created = await http.post("/generate", json={**body, "duration": DURATION})
                task_id = created.json()["data"]["task_id"]
                while True:
                    await asyncio.sleep(interval)
                    status = await http.get("/status", params={"task_id": task_id})
                    state = status.json()["data"]["status"]
                    if state in ("SUCCESS", "FAILED"):
                        succeeded += state == "SUCCESS"
                        return

            started = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(jobs)))
            elapsed = time.monotonic() - started
    calls = simulator.state.sim.calls
    return {
        "client": "polling every 5 s (baseline)",
        "jobs": jobs,
        "succeeded": succeeded,
        "generate": calls["generate"],
        "status": calls["status"],
        "callbacks_lost": 0,
        "calls_per_success": round((calls["generate"] + calls["status"]) / succeeded, 3),
        "wall_seconds": round(elapsed, 1),
    }


async def main(args: Any) -> None:
    rows = [await polling_client(args.jobs, args)]
    # confirmation off (the figure of the design), then on (CONFIRM_SUCCESS_WITH_STATUS,
    # the default): one status call per success
    for loss, confirm in ((0.0, False), (0.2, False), (0.5, False), (0.0, True)):
        async with migrated_database("bench_cost") as url:
            rows.append(await through_service(url, args.jobs, loss, confirm, args))
    baseline = rows[0]["calls_per_success"]
    for row in rows:
        row["vs_polling"] = round(row["calls_per_success"] / baseline, 3)
    headers = list(rows[0])
    print_table(
        f"Upstream calls per successful job ({args.jobs} jobs, {args.render_seconds:g} s renders,"
        f" time x{args.time_scale:g})",
        headers,
        [[row[h] for h in headers] for row in rows],
    )
    write_results("upstream_cost", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument(
        "--render-seconds", type=float, default=60, help="simulated render time (real time)"
    )
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
