"""Live streams held open against one service process while no job moves: the database
work they cost, and the memory each one takes.

For each N in `--streams` (one `GET /events` per user) and each SSE_RECHECK_SECONDS in
`--recheck` (15: a re-read every heartbeat, as before the setting existed; 300: the
default), against one uvicorn process (uvloop, httptools) on Postgres: the database's
transactions per second while the streams sit idle (committed or rolled back: a read-only
session ends with a rollback), minus the same window with no stream open
(pg_stat_database, same run), and the service's RSS growth per open stream.

    .venv/bin/python -m bench.sse_fanout --streams 1000 5000 --seconds 30
"""

import argparse
import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth import issue_token
from app.config import Settings
from bench.common import RESULTS, SECRETS, migrated_database, server, service_env, write_results
from tests.harness import free_port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def open_stream(port: int, token: str) -> asyncio.StreamWriter:
    """A raw HTTP/1.1 stream of /events, read up to its first event (`ready`), then
    drained in the background (the heartbeats)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head[:200]
    await reader.readuntil(b"\r\n\r\n")  # the `ready` event (chunked framing around it)

    async def drain() -> None:
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    asyncio.get_running_loop().create_task(drain())
    return writer


async def transactions_per_second(url: str, seconds: float) -> float:
    engine = create_async_engine(url, pool_size=1)
    query = text(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"
    )
    async with engine.connect() as conn:
        before = await conn.scalar(query)
        await conn.commit()
        await asyncio.sleep(seconds)
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        after = await conn.scalar(query)
    await engine.dispose()
    return (after - before - 2) / seconds  # our own two reads are not the service's


def service_pid(port: int) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"uvicorn app.main:create_app --factory --port {port} "],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(found.stdout.split()[0])


async def measure(url: str, streams: int, recheck: float, seconds: float) -> dict[str, Any]:
    port = free_port()
    env = service_env(
        url,
        port,
        sse_recheck_seconds=str(recheck),
        sse_max_streams_per_replica=str(streams + 10),
    )
    settings = Settings(_env_file=None, database_url=url, **SECRETS)  # type: ignore[arg-type]
    tokens = [issue_token(settings, f"viewer-{i}") for i in range(streams)]
    with server("app.main:create_app", port, 1, env, RESULTS / "sse_fanout.log"):
        pid = service_pid(port)
        await asyncio.sleep(2)  # settled after start-up
        idle = await transactions_per_second(url, seconds)
        rss_before = rss_mb(pid)
        writers = []
        for start in range(0, streams, 200):  # in waves: the accept queue has its limits
            writers += await asyncio.gather(
                *(open_stream(port, token) for token in tokens[start : start + 200])
            )
        # each stream's first read of the database comes after its `ready` event: let the
        # last of them land before measuring the idle ones
        await asyncio.sleep(max(10.0, streams / 50))
        rss_after = rss_mb(pid)
        held = await transactions_per_second(url, seconds)
        for writer in writers:
            writer.close()
    return {
        "streams": streams,
        "recheck_seconds": recheck,
        "transactions_per_s_without_streams": round(idle, 2),
        "transactions_per_s_with_streams": round(held, 2),
        "transactions_per_s_from_streams": round(held - idle, 2),
        "rss_mb_before": round(rss_before, 1),
        "rss_kb_per_stream": round((rss_after - rss_before) * 1024 / streams, 1),
    }


async def main(args: argparse.Namespace) -> None:
    rows = []
    async with migrated_database("bench_sse_fanout") as url:
        for streams in args.streams:
            for recheck in args.recheck:
                row = await measure(url, streams, recheck, args.seconds)
                print(row, flush=True)
                rows.append(row)
    print(f"\n{'streams':>8} {'recheck s':>9} {'DB tx/s from streams':>21} {'RSS KB/stream':>14}")
    for row in rows:
        print(
            f"{row['streams']:>8} {row['recheck_seconds']:>9} "
            f"{row['transactions_per_s_from_streams']:>21} {row['rss_kb_per_stream']:>14}"
        )
    write_results("sse_fanout", {"seconds": args.seconds, "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--recheck", type=float, nargs="+", default=[15.0, 300.0])
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
