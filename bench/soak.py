"""A soak: the whole service under a steady load for a long while, with a Postgres
restart in the middle, sampled every 10 s and plotted.

One service process (dispatcher, reconciler, media copier on; rate limits in Redis), the
simulator in a process of its own (renders in `--render-seconds`, calls back), and this
load generator on the same 2 cores: `--creates` jobs a second by 1,000 users, each user
holding one `GET /events` stream (reopened with Last-Event-ID when it ends), and
`--reads` `GET /jobs/{id}` a second. Halfway, Postgres is restarted
(`pg_ctlcluster 15 main restart`). Every 10 s: the service's RSS, open file descriptors,
CPU, database connections in use and event-loop lag (its /metrics). At the end it waits
for every job to be terminal and prints the errors by kind (a 503 while Postgres is down
is expected; anything else is not).

    .venv/bin/pip install -e '.[bench]'   # matplotlib, for the plot
    .venv/bin/python -m bench.soak --minutes 20
"""

import argparse
import asyncio
import contextlib
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app.db.models import Job
from app.identity.tokens import issue_token
from app.jobs.states import TERMINAL
from bench.common import (
    RESULTS,
    SECRETS,
    migrated_database,
    server,
    server_pid,
    service_env,
    write_results,
)
from testkit.harness import SEEDANCE_TEST_KEY, free_port, plain_settings

USERS = 1000
SAMPLE_SECONDS = 10
GAUGE = re.compile(rb"^(seedance_db_pool_checked_out|seedance_event_loop_lag_seconds) (\S+)$", re.M)


@contextmanager
def simulator(port: int, render_seconds: float) -> Iterator[str]:
    settings = [f"api_key={SEEDANCE_TEST_KEY}", f"task_seconds={render_seconds}"]
    settings += ["reject_local_urls=false"]
    command = [sys.executable, "-m", "simulator", "--port", str(port)]
    for setting in settings:
        command += ["--set", setting]
    with (RESULTS / "soak-simulator.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{url}/docs")
                break
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


class Errors:
    """Every failed request or stream, by kind, and when."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.at: list[tuple[float, str]] = []
        self.skipped: Counter[str] = Counter()  # calls the generator could not send in time

    def note(self, kind: str) -> None:
        self.by_kind[kind] += 1
        self.at.append((time.monotonic(), kind))


EVENT_ID = re.compile(rb"(?:^|\n)id: (\d+)")


async def follow(port: int, token: str, errors: Errors, stop: asyncio.Event) -> None:
    """One user's stream over a raw connection (httpx's pool does not scale to a thousand
    open streams), reopened after a second with Last-Event-ID when it ends."""
    last: bytes | None = None
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            resume = b"Last-Event-ID: " + last + b"\r\n" if last else b""
            writer.write(
                b"GET /events HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer "
                + token.encode()
                + b"\r\n"
                + resume
                + b"\r\n"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            if status != "200":
                errors.note(f"stream {status}")
            else:
                while chunk := await reader.read(65536):
                    if found := EVENT_ID.findall(chunk):
                        last = found[-1]
                errors.note("stream ended")  # a clean end: the client resumes
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.note(f"stream {type(exc).__name__}")
        finally:
            if writer is not None:
                writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)


IN_FLIGHT = 80  # under the client's 100 connections: httpx's pool queue is quadratic


async def paced(rate: float, stop: asyncio.Event, one: Any, skipped: Counter[str]) -> None:
    """Call `one()` `rate` times a second (each in its own task) until `stop`; a call due
    while IN_FLIGHT are unanswered is skipped and counted (the generator is behind)."""
    started, sent = time.monotonic(), 0
    running: set[asyncio.Task[Any]] = set()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        for _ in range(due - sent):
            if len(running) >= IN_FLIGHT:
                skipped[one.__name__] += 1
                continue
            task = asyncio.create_task(one())
            running.add(task)
            task.add_done_callback(running.discard)
        sent = max(sent, due)
        await asyncio.sleep(0.01)
    await asyncio.gather(*running, return_exceptions=True)


async def load(
    url: str,
    port: int,
    tokens: list[str],
    args: argparse.Namespace,
    errors: Errors,
    stop: asyncio.Event,
) -> list[tuple[str, str]]:
    """Creates, reads and streams until `stop`; the jobs created (id, owner's token)."""
    created: list[tuple[str, str]] = []
    rng = random.Random(1)
    skipped = errors.skipped
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def create() -> None:
            token = rng.choice(tokens)
            try:
                response = await http.post(
                    "/jobs",
                    json={"prompt": f"soak {len(created)}"},
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Idempotency-Key": os.urandom(8).hex(),
                    },
                )
            except httpx.HTTPError as exc:
                errors.note(f"POST {type(exc).__name__}")
                return
            if response.status_code == 202:
                created.append((response.json()["id"], token))
            else:
                errors.note(f"POST {response.status_code}")

        async def read() -> None:
            if not created:
                return
            job_id, token = rng.choice(created[-1000:])
            try:
                response = await http.get(
                    f"/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as exc:
                errors.note(f"GET {type(exc).__name__}")
                return
            if response.status_code != 200:
                errors.note(f"GET {response.status_code}")

        streams = [asyncio.create_task(follow(port, token, errors, stop)) for token in tokens]
        await asyncio.gather(
            paced(args.creates, stop, create, skipped), paced(args.reads, stop, read, skipped)
        )
        for stream in streams:  # an open stream never ends by itself
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    return created


def process_sample(pid: int, previous_cpu: float, seconds: float) -> tuple[dict[str, float], float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]  # always in Linux status
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {
        "rss_mb": round(rss, 1),
        "open_fds": fds,
        "cpu_percent": round((cpu - previous_cpu) / seconds * 100, 1),
    }, cpu


async def sample(
    url: str, pid: int, admin: str, began: float, samples: list[dict[str, Any]], stop: asyncio.Event
) -> None:
    cpu = 0.0
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
            row, cpu = process_sample(pid, cpu, SAMPLE_SECONDS)
            row["minute"] = round((time.monotonic() - began) / 60, 2)
            with contextlib.suppress(httpx.HTTPError):
                metrics = await http.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
                for name, value in GAUGE.findall(metrics.content):
                    row[name.decode().removeprefix("seedance_")] = float(value)
            samples.append(row)
            print(row, flush=True)


async def unfinished(url: str) -> int:
    engine = create_async_engine(url)
    async with async_sessionmaker(engine)() as session:
        count = await session.scalar(
            select(func.count()).select_from(Job).where(Job.status.not_in(list(TERMINAL)))
        )
    await engine.dispose()
    return int(count or 0)


def plot(samples: list[dict[str, Any]], restart_minute: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("rss_mb", "RSS (MB)"),
        ("open_fds", "open file descriptors"),
        ("cpu_percent", "CPU (% of one core)"),
        ("db_pool_checked_out", "DB connections in use"),
        ("event_loop_lag_seconds", "event-loop lag, worst per 10 s (s)"),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 12), sharex=True)
    minutes = [row["minute"] for row in samples]
    for axis, (key, title) in zip(axes, panels, strict=True):
        axis.plot(minutes, [row.get(key, float("nan")) for row in samples], marker=".")
        axis.axvline(restart_minute, color="red", linestyle="--", label="Postgres restart")
        axis.set_ylabel(title, fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("minutes")
    figure.suptitle("bench.soak: one service process, 1,000 streams, creates, reads, callbacks")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


async def main(args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    settings = plain_settings(**SECRETS)
    tokens = [issue_token(settings, f"soak-{i}", ttl=24 * 3600) for i in range(USERS)]
    admin = issue_token(settings, "ops", admin=True, ttl=24 * 3600)
    errors, samples = Errors(), list[Any]()
    port = free_port()
    with simulator(free_port(), args.render_seconds) as sim_url:
        async with migrated_database("bench_soak") as url:
            env = service_env(
                url,
                port,
                seedance_api_key=SEEDANCE_TEST_KEY,
                seedance_base_url=f"{sim_url}/v2",
                dispatcher_enabled="true",
                reconciler_enabled="true",
                media_worker_enabled="true",
                media_trusted_origins=sim_url,
                media_root=str(RESULTS / "soak-media"),
                sse_max_streams_per_user="2",
            )
            with server("app.main:create_app", port, 1, env, RESULTS / "soak.log") as service:
                pid = server_pid("app.main:create_app", port)
                began = time.monotonic()
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample(service, pid, admin, began, samples, stop))
                loader = asyncio.create_task(load(service, port, tokens, args, errors, stop))
                await asyncio.sleep(args.minutes * 30)
                restart_minute = (time.monotonic() - began) / 60
                restart_began = time.monotonic()
                restart = await asyncio.create_subprocess_exec(
                    *("pg_ctlcluster", "15", "main", "restart", "--mode", "fast"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,  # the new postmaster would hold our pipes
                    stderr=subprocess.DEVNULL,
                )
                assert await restart.wait() == 0, "Postgres did not restart"
                restart_seconds = time.monotonic() - restart_began
                print(f"Postgres restarted in {restart_seconds:.1f} s", flush=True)
                await asyncio.sleep(args.minutes * 30)
                stop.set()
                created = await loader
                await sampler
                # a callback lost to the restart is recovered by the reconciler once it
                # is overdue (CALLBACK_OVERDUE_BASE_SECONDS, 120 s and more)
                load_ended = time.monotonic()
                for _ in range(300):
                    if not (left := await unfinished(url)):
                        break
                    await asyncio.sleep(2)
                settled_seconds = time.monotonic() - load_ended
    plot(samples, restart_minute, RESULTS / "soak.png")
    restart_window = (restart_began - 5, restart_began + restart_seconds + 30)
    outside = Counter(
        kind
        for at, kind in errors.at
        if not restart_window[0] <= at <= restart_window[1] and kind != "stream ended"
    )
    figures = {
        "minutes": args.minutes,
        "creates_per_s": args.creates,
        "reads_per_s": args.reads,
        "jobs_created": len(created),
        "jobs_not_terminal_at_end": left,
        "seconds_until_all_terminal": round(settled_seconds),
        "postgres_restart_seconds": round(restart_seconds, 1),
        "errors_by_kind": dict(errors.by_kind),
        "calls_skipped_by_the_generator": dict(errors.skipped),
        "errors_outside_the_restart": dict(outside),
        "rss_mb_first_last": (samples[0]["rss_mb"], samples[-1]["rss_mb"]),
        "samples": samples,
    }
    summary = {k: v for k, v in figures.items() if k != "samples"}
    print(summary)
    write_results("soak", figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--creates", type=float, default=20, help="jobs created per second")
    parser.add_argument("--reads", type=float, default=250, help="GET /jobs/{id} per second")
    parser.add_argument("--render-seconds", type=float, default=2)
    asyncio.run(main(parser.parse_args()))
