"""What every benchmark shares: a fresh migrated Postgres database, the machine it ran on,
a printed table and a JSON file of the figures (bench/results/, not committed)."""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine

from app.db.migrate import run_on_connection
from testkit.databases import fresh_postgres_database

RESULTS = Path(__file__).parent / "results"
SECRETS = {
    "jwt_secret": "bench-jwt-secret-" + "x" * 24,
    "callback_secret": "bench-hook-" + "y" * 30,
    "media_url_secret": "bench-media-" + "z" * 30,
    "outbound_secrets_key": "bench-outbound-" + "w" * 30,
}


@asynccontextmanager
async def migrated_database(prefix: str) -> AsyncIterator[str]:
    """A new Postgres database at head, dropped afterwards (the server of the tests)."""
    async with fresh_postgres_database(prefix) as url:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(run_on_connection, "upgrade", "head")
        await engine.dispose()
        yield url


def service_env(database_url: str, port: int, **overrides: str) -> dict[str, str]:
    """The service as deployed (production settings, rate limits in Redis), background
    loops off and limits out of the way unless a benchmark turns them on."""
    settings = {
        "environment": "production",
        "database_url": database_url,
        "redis_url": "redis://127.0.0.1:6379/0",
        "rate_limit_key_prefix": f"bench-{uuid.uuid4().hex[:8]}",
        "seedance_api_key": "bench-unused-key",
        "seedance_base_url": "http://127.0.0.1:9/v2",
        "public_base_url": f"http://127.0.0.1:{port}",
        "dispatcher_enabled": "false",
        "reconciler_enabled": "false",
        "media_worker_enabled": "false",
        "confirm_success_with_status": "false",
        "rate_limit_create": "10000000/minute",
        "rate_limit_read": "10000000/minute",
        "rate_limit_callback": "10000000/minute",
        "user_max_jobs_in_flight": "100000000",
        "user_daily_credit_budget": str(10**12),
        **SECRETS,
        **overrides,
    }
    return {**os.environ, **{name.upper(): value for name, value in settings.items()}}


@contextmanager
def server(target: str, port: int, workers: int, env: dict[str, str], log: Path) -> Iterator[str]:
    """An ASGI app factory under uvicorn (uvloop, httptools) in its own process."""
    command = [sys.executable, "-m", "uvicorn", target, "--factory", "--port", str(port)]
    command += ["--workers", str(workers), "--loop", "uvloop", "--http", "httptools"]
    command += ["--no-access-log", "--log-level", "warning"]
    # as docker/entrypoint.sh: idle connections outlive the client's (httpx: 5 s), or a
    # request sent as uvicorn closes the connection fails (a ReadError in the client)
    command += ["--timeout-keep-alive", "75"]
    log.parent.mkdir(exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{target} did not start; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def server_pid(target: str, port: int) -> int:
    """The pid of the uvicorn process `server()` started for `target` on `port`."""
    found = subprocess.run(
        ["pgrep", "-f", f"uvicorn {target} --factory --port {port} "],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(found.stdout.split()[0])


async def insert_rows(conn: AsyncConnection | AsyncSession, table: Any, rows: list[Any]) -> None:
    """Bulk insert in chunks that stay under the driver's bound-parameter limit."""
    for start in range(0, len(rows), 5000):
        await conn.execute(insert(table), rows[start : start + 5000])


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(field: str, pid: int | str = "self") -> int:
    """A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`: the RSS high-water mark)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int | str = "self") -> int:
    """Reset the process's RSS high-water mark to its RSS now; returns that RSS in KiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kib("VmRSS", pid)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    postgres = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": postgres,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, interpolated."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))


def write_results(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **figures}, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path
