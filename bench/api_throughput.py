"""API throughput and latency, each next to a bare baseline measured in the same run on
the same database, with one and two uvicorn workers:

* `GET /jobs/{id}` (auth, rate limit, owner check, serialize) vs a bare FastAPI + asyncpg
  endpoint reading the same row, and vs the same I/O (the rate-limit script in Redis, then
  that read) through the raw drivers;
* `POST /jobs` (validate, rate limit, budget under the owner lock, record job + event,
  202) vs a bare endpoint inserting one row, and vs the same I/O (the rate-limit script,
  then the create's transaction: lock, budget, job, event) through the raw drivers;
* webhook ingestion (verify the signature, parse, apply the move under the row lock,
  event row) vs the same bare insert; every delivery is a different running job, and
  the run checks that each acknowledged callback was applied (no lost update).

Every seeded job waits in the queue (`--waiting`, 10,000 by default; no dispatcher runs),
and the creates add thousands more: each read and create pays whatever a long line costs
(its place in it is part of every answer).

The service runs as deployed: production settings, JSON logs, rate limits in Redis.
Load comes from wrk on loopback, bounded by `--seconds`. At saturation the baselines and
ours alternate for `--rounds` rounds and each reports its median round: on a shared
machine the speed of all drifts by ±15% from one minute to the next.

    .venv/bin/python -m bench.api_throughput --seconds 10 --connections 64
"""

import argparse
import asyncio
import os
import re
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.models import Job, JobEvent
from app.identity.tokens import issue_token
from app.jobs.callbacks import callback_signature
from app.jobs.states import MediaStatus
from bench.bare_app import BARE_TABLE
from bench.common import (
    RESULTS,
    SECRETS,
    cpu_seconds,
    insert_rows,
    migrated_database,
    print_table,
    server,
    service_env,
    write_results,
)
from testkit.databases import job_row
from testkit.harness import plain_settings

LUA = Path(__file__).parent / "wrk" / "requests.lua"
USERS = 1000
BODY = orjson.dumps({"prompt": "a paper boat on a rainy street, golden hour", "duration": 8})


def wrk(
    url: str, lines: list[str], seconds: float, connections: int, rate: float = 0
) -> dict[str, float]:
    """Run wrk over the given requests; requests/s, p50/p99 in ms, 2xx and other counts.
    With `rate`, connections are paced to about that many requests per second in all."""
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as listing:
        listing.write("\n".join(lines) + "\n")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--latency"]
    command += ["-s", str(LUA)]
    pacing = {"DELAY_MS": str(round(connections * 1000 / rate))} if rate else {}
    result = subprocess.run(
        [*command, url],
        env={**os.environ, "REQUESTS": listing.name, **pacing},
        capture_output=True,
        text=True,
        check=True,
    )
    Path(listing.name).unlink()
    out = result.stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]  # wrk prints it
        return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 2)

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]  # wrk prints it
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = int(errors.group(1)) if errors else 0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),  # type: ignore[union-attr]  # wrk prints it
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "ok": total - failed,
        "not_ok": failed + (1 if socket_errors else 0),
    }


async def alternating(
    targets: dict[str, tuple[str, int]],
    lines: list[str],
    args: Any,
    also: dict[str, int | str] | None = None,
) -> dict[str, dict[str, Any]]:
    """wrk against each `(url, server pid)` in turn, `args.rounds` rounds of `args.seconds`
    at `args.connections`; each run with the CPU per request of its server (`service_cpu_ms`)
    and of each process in `also` (`<name>_cpu_ms`). Returns each target's median run (by
    requests/s), with every run's requests/s in `rounds`."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (url, pid) in targets.items():
            watched = {"service": pid, **(also or {})}
            before = {what: cpu_seconds(process) for what, process in watched.items()}
            figures = await asyncio.to_thread(wrk, url, lines, args.seconds, args.connections)
            requests = max(1, figures["ok"] + figures["not_ok"])
            cpu = {
                f"{what}_cpu_ms": round((cpu_seconds(process) - before[what]) * 1000 / requests, 2)
                for what, process in watched.items()
            }
            runs[name].append(figures | cpu)
    return {
        name: sorted(done, key=lambda f: f["rps"])[len(done) // 2]
        | {"rounds": [run["rps"] for run in done]}
        for name, done in runs.items()
    }


async def seed_jobs(engine: AsyncEngine, count: int, status: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    running = status == "running"
    rows = [
        job_row(i, f"user-{i % USERS}", status, now, f"bench-{i}" if running else None)
        for i in range(count)
    ]
    async with engine.begin() as conn:
        await insert_rows(conn, Job, rows)
    return rows


def line(method: str, path: str, auth: str = "", body: bytes = b"") -> str:
    return "\t".join((method, path, auth, body.decode()))


async def measure(workers: int, args: Any, log: Path) -> list[dict[str, Any]]:
    settings = plain_settings(**SECRETS)
    tokens = [f"Bearer {issue_token(settings, f'user-{i}')}" for i in range(USERS)]
    rows: list[dict[str, Any]] = []
    async with migrated_database("bench_api") as url:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text(BARE_TABLE))
        # every job waits (no dispatcher): each read and create pays for a queue this long
        readable = (await seed_jobs(engine, args.waiting, "queued"))[:2000]
        gets = [
            line("GET", f"/jobs/{job['id']}", tokens[int(job["owner"].split("-")[1])])
            for job in readable
        ]
        posts = [line("POST", "/jobs", token, BODY) for token in tokens]
        bare_inserts = [line("POST", "/insert", "", BODY)]
        same_io = {
            "GET": [line("GET", f"/io/jobs/{job['id']}?owner={job['owner']}") for job in readable],
            "POST": [line("POST", f"/io/jobs?owner=user-{i}", "", BODY) for i in range(USERS)],
        }
        ours_env = service_env(url, args.port)
        bare_env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": ours_env["REDIS_URL"]}
        with (
            server("app.main:create_app", args.port, workers, ours_env, log) as ours,
            server("bench.bare_app:create_app", args.port + 1, workers, bare_env, log) as bare,
        ):
            for target in (ours, bare):  # warm pools and caches
                wrk(target, gets, 2, args.connections)
            for name, bare_lines, io_lines, our_lines in (
                ("GET /jobs/{id}", gets, same_io["GET"], gets),
                ("POST /jobs", bare_inserts, same_io["POST"], posts),
            ):
                baseline, io, measured = compare(
                    [
                        (target, [lines] * args.rounds)
                        for target, lines in (
                            (bare, bare_lines),
                            (bare, io_lines),
                            (ours, our_lines),
                        )
                    ],
                    args,
                )
                rows.append(row(name, workers, args.connections, measured, baseline, io))
                if our_lines is gets:
                    get_maximum = measured["rps"]
            # latency below saturation: both paced to half of our measured GET maximum
            rate = get_maximum / 2
            paced_bare = wrk(bare, gets, args.seconds, args.connections, rate)
            paced = wrk(ours, gets, args.seconds, args.connections, rate)
            name = f"GET /jobs/{{id}} paced to {rate:.0f}/s"
            rows.append(row(name, workers, args.connections, paced, paced_bare))

            running = await seed_jobs(engine, args.callbacks, "running")
            callbacks = [
                line(
                    "POST",
                    f"/webhooks/seedance/{job['id']}?sig={callback_signature(settings, job['id'])}",
                    "",
                    orjson.dumps(
                        {
                            "code": 200,
                            "data": {
                                "task_id": job["upstream_task_id"],
                                "status": "SUCCESS",
                                "response": [f"https://cdn.example.com/{job['id']}.mp4"],
                            },
                        }
                    ),
                )
                for job in running
            ]
            # each round calls back jobs of its own: a repeated delivery would be ignored
            share = len(callbacks) // args.rounds
            baseline, measured = compare(
                [
                    (bare, [bare_inserts] * args.rounds),
                    (ours, [callbacks[i * share : (i + 1) * share] for i in range(args.rounds)]),
                ],
                args,
            )
            acknowledged = sum(run["ok"] for run in measured["runs"])
        # counted once the servers have stopped: in-flight deliveries have finished. A
        # SUCCESS hands its job to the media worker (off here): applied = copies now due
        async with engine.connect() as conn:
            applied = await conn.scalar(
                select(func.count()).where(Job.media_status == MediaStatus.PENDING)
            )
            moved = await conn.scalar(select(func.count()).where(JobEvent.to_status == "succeeded"))
        assert all(run["ok"] <= share for run in measured["runs"]), (
            "a round repeated callbacks: raise --callbacks"
        )
        lost = acknowledged - applied
        assert lost <= 0 and moved == 0, f"acknowledged but not applied: {lost}"
        webhook = row("webhook ingestion", workers, args.connections, measured, baseline)
        webhook["applied"] = applied
        rows.append(webhook)
        await engine.dispose()
    return rows


Target = tuple[str, list[list[str]]]  # a server's URL and the requests of each round


def compare(targets: list[Target], args: Any) -> list[dict[str, Any]]:
    """Run the targets in turn, round after round, for `--rounds` rounds (the shared
    machine's speed drifts); each target's figures are those of its median round by
    requests/s, with every round kept (`runs`: ours needs them for the no-lost-update
    count)."""
    runs: list[list[dict[str, float]]] = [[] for _ in targets]
    for index in range(args.rounds):
        for (url, rounds), target_runs in zip(targets, runs, strict=True):
            target_runs.append(wrk(url, rounds[index], args.seconds, args.connections))

    def median(runs: list[dict[str, float]]) -> dict[str, Any]:
        return sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]

    return [{**median(target_runs), "runs": target_runs} for target_runs in runs]


def row(
    name: str,
    workers: int,
    connections: int,
    ours: dict[str, Any],
    bare: dict[str, Any],
    same_io: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sides = {"ours": ours, "bare": bare, **({"same_io": same_io} if same_io else {})}
    return {
        "route": name,
        "workers": workers,
        "connections": connections,
        "rps": ours["rps"],
        "p50_ms": ours["p50_ms"],
        "p99_ms": ours["p99_ms"],
        "errors": ours["not_ok"],
        "bare_rps": bare["rps"],
        "bare_p99_ms": bare["p99_ms"],
        "of_bare": f"{ours['rps'] / bare['rps']:.0%}",
        "same_io_rps": same_io["rps"] if same_io else "",
        "same_io_of_bare": f"{same_io['rps'] / bare['rps']:.0%}" if same_io else "",
        "of_same_io": f"{ours['rps'] / same_io['rps']:.0%}" if same_io else "",
        # every round's requests/s, in the JSON only (paced runs have one round)
        "rounds": {
            side: [run["rps"] for run in figures.get("runs", [figures])]
            for side, figures in sides.items()
        },
    }


async def main(args: Any) -> None:
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / "api_throughput.log"
    log.unlink(missing_ok=True)
    rows = []
    for workers in args.workers:
        rows += await measure(workers, args, log)
    headers = [name for name in rows[0] if name != "rounds"]
    print_table(
        f"API throughput ({args.seconds:g} s per run, wrk -t1 -c{args.connections}, loopback)",
        headers,
        [[r.get(h, "") for h in headers] for r in rows],
    )
    write_results("api_throughput", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="alternate runs per comparison")
    parser.add_argument("--callbacks", type=int, default=90_000, help="running jobs to call back")
    parser.add_argument("--waiting", type=int, default=10_000, help="queued jobs at the start")
    parser.add_argument("--port", type=int, default=8700)
    asyncio.run(main(parser.parse_args()))
