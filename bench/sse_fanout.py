"""Live streams held open against one service process: the database work they cost idle
and while jobs finish, the memory each one takes, and how fast a move reaches its stream.

For each N in `--streams`, against one uvicorn process (uvloop, httptools) on Postgres,
with the load generator on the same machine:
* baselines, same run: the RSS growth per open stream of a bare sse-starlette endpoint
  and of a plain Starlette StreamingResponse (bench/bare_app.py);
* N `GET /events` streams, one user each; the database's transactions per second while
  they sit idle (pg_stat_database, committed or rolled back: a read-only session ends
  with a rollback), minus the same window with no stream open; RSS growth per stream;
* then `--rate` jobs per second finish for `--seconds` (Seedance callbacks reporting a
  failed task, one move each, for jobs of random viewers): transactions per move, the
  latency from when the callback was due to the move arriving on its owner's stream, and
  the full garbage collections the service ran meanwhile (`seedance_gc_pause_seconds`).

    .venv/bin/python -m bench.sse_fanout --streams 1000 5000 10000
"""

import argparse
import asyncio
import contextlib
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app.config import Settings
from app.db.models import Job
from app.identity.tokens import issue_token
from app.jobs.callbacks import callback_signature
from bench.common import (
    RESULTS,
    SECRETS,
    insert_rows,
    migrated_database,
    percentile,
    server,
    server_pid,
    service_env,
    status_kib,
    write_results,
)
from testkit.databases import job_row
from testkit.harness import free_port, plain_settings

WAVE = 200  # streams opened at once: the accept queue has its limits


def rss_mb(pid: int) -> float:
    return status_kib("VmRSS", pid) / 1024


async def open_stream(
    port: int, path: str, token: str | None, on_data: Callable[[bytes], None] | None = None
) -> asyncio.StreamWriter:
    """A raw HTTP/1.1 stream, read up to its first event, then read in the background
    (each chunk handed to `on_data`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}Accept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head[:200]
    await reader.readuntil(b"\r\n\r\n")  # the first event (chunked framing around it)

    async def drain() -> None:
        with contextlib.suppress(Exception):
            while chunk := await reader.read(65536):
                if on_data is not None:
                    on_data(chunk)

    asyncio.get_running_loop().create_task(drain())
    return writer


async def open_streams(
    port: int, path: str, tokens: list[str | None], on_data: Callable[[bytes], None] | None
) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, len(tokens), WAVE):
        wave = tokens[start : start + WAVE]
        writers += await asyncio.gather(*(open_stream(port, path, t, on_data) for t in wave))
    return writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    """Closed before the server is stopped: its graceful shutdown waits for them."""
    for writer in writers:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)


class Transactions:
    """The database's transaction count (committed or rolled back: a read-only session
    ends with a rollback), read on one connection of our own; each read is itself one
    transaction, which `since` leaves out."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._conn: asyncpg.Connection | None = None

    async def read(self) -> int:
        if self._conn is None:
            self._conn = await asyncpg.connect(self._dsn)
        return int(
            await self._conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        )

    async def since(self, before: int) -> int:
        return await self.read() - before - 1

    async def per_second(self, seconds: float) -> float:
        before = await self.read()
        await asyncio.sleep(seconds)
        return await self.since(before) / seconds

    async def settle(self, baseline_per_s: float, limit_s: float = 300) -> None:
        """Until the streams just opened have made their first reads (queued behind the
        connection pool): three seconds in a row at the baseline's rate."""
        calm, previous, deadline = 0, await self.read(), time.monotonic() + limit_s
        while calm < 3 and time.monotonic() < deadline:
            await asyncio.sleep(1)
            current = await self.read()
            calm = calm + 1 if current - previous - 1 <= baseline_per_s + 1 else 0
            previous = current

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def rss_per_stream(
    target: str, path: str, streams: int, env: dict[str, str], tokens: list[str | None]
) -> float:
    """KB of RSS per open stream of `path`, after they have all settled."""
    port = free_port()
    with server(target, port, 1, {**env, "PORT": str(port)}, RESULTS / "sse_fanout.log"):
        pid = server_pid(target, port)
        await asyncio.sleep(2)
        before = rss_mb(pid)
        writers = await open_streams(port, path, tokens[:streams], None)
        await asyncio.sleep(max(5.0, streams / 500))
        after = rss_mb(pid)
        await close_all(writers)
    return round((after - before) * 1024 / streams, 1)


async def seed_running_jobs(url: str, owners: list[str], count: int) -> list[dict[str, Any]]:
    """Jobs as the dispatcher leaves them (running, a task id), for random viewers."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    rows = [job_row(i, rng.choice(owners), "running", now, f"task-{i}") for i in range(count)]
    engine = create_async_engine(url)
    async with async_sessionmaker(engine)() as session, session.begin():
        await insert_rows(session, Job, rows)
    await engine.dispose()
    return rows


# a `failed` move's event; [^{]* stays before the job object nested in it
FAILED_MOVE = re.compile(rb'"job_id":"([0-9a-f-]{36})"[^{]*"to_status":"failed"')


class Arrivals:
    """When each job's move reached a stream."""

    def __init__(self, job_ids: list[str]) -> None:
        self.pending = set(job_ids)
        self.at: dict[str, float] = {}
        self.complete = asyncio.Event()

    def note(self, chunk: bytes) -> None:
        now = time.monotonic()
        for match in FAILED_MOVE.finditer(chunk):
            job_id = match.group(1).decode()
            if job_id in self.pending:
                self.pending.discard(job_id)
                self.at[job_id] = now
        if not self.pending:
            self.complete.set()


CALLERS = 20  # keep-alive connections sending callbacks


async def finish_jobs(
    port: int, settings: Settings, jobs: list[dict[str, Any]], rate: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Send each job's callback (a failed task), `rate` a second, over raw keep-alive
    connections (an HTTP client's pool would cost this generator more CPU than the
    service: its queueing showed as seconds of latency); when each was due and when its
    answer came. Latency counts from when a callback was due, not from when a free
    connection took it: while the service stalls, the callbacks waiting behind its 20
    busy connections are late by the stall too (counting from the send left them out,
    and hid most of a stall from the p99)."""
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    due: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def caller() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (job := await due.get()) is not None:
            job_id = job["id"]
            body = orjson.dumps(
                {"task_id": job["upstream_task_id"], "status": "FAILED", "error": "bench"}
            )
            sig = callback_signature(settings, job_id)
            writer.write(
                f"POST /webhooks/seedance/{job_id}?sig={sig} HTTP/1.1\r\nHost: bench\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n", 1)[0], head
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]  # HTTP/1.1 heads carry it
            await reader.readexactly(length)
            answered[str(job_id)] = time.monotonic()
        writer.close()

    callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    start = time.monotonic()
    for index, job in enumerate(jobs):
        await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
        sent[str(job["id"])] = time.monotonic()  # when it was due, busy callers or not
        due.put_nowait(job)
    for _ in callers:
        due.put_nowait(None)
    await asyncio.gather(*callers)
    return sent, answered


FULL_COLLECTIONS = re.compile(r'seedance_gc_pause_seconds_(count|sum)\{generation="2"\} (\S+)')


async def full_collections(url: str, token: str) -> tuple[float, float]:
    """How many full garbage collections the service has run, and their summed pause (s)."""
    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})).text
    found = dict(FULL_COLLECTIONS.findall(text))  # none yet: no series
    return float(found.get("count", 0)), float(found.get("sum", 0))


async def measure(url: str, streams: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = plain_settings(database_url=url, **SECRETS)
    owners = [f"viewer-{i}" for i in range(streams)]
    tokens: list[str | None] = [issue_token(settings, owner) for owner in owners]
    moves = int(args.rate * args.seconds)
    jobs = await seed_running_jobs(url, owners, moves)
    port = free_port()
    env = service_env(url, port, sse_max_streams_per_replica=str(streams + 10))
    bare = {
        "bare_sse_starlette_kb_per_stream": await rss_per_stream(
            "bench.bare_app:create_app", "/sse", streams, env, [None] * streams
        ),
        "plain_streaming_response_kb_per_stream": await rss_per_stream(
            "bench.bare_app:create_app", "/plain-stream", streams, env, [None] * streams
        ),
    }
    arrivals = Arrivals([str(job["id"]) for job in jobs])
    counter = Transactions(url)
    admin = issue_token(settings, "bench-admin", admin=True)
    with server("app.main:create_app", port, 1, env, RESULTS / "sse_fanout.log") as service:
        pid = server_pid("app.main:create_app", port)
        await asyncio.sleep(2)  # settled after start-up
        without = await counter.per_second(args.idle_seconds)
        rss_before = rss_mb(pid)
        writers = await open_streams(port, "/events", tokens, arrivals.note)
        await counter.settle(without)
        rss_after = rss_mb(pid)
        held = await counter.per_second(args.idle_seconds)
        before_load = await counter.read()
        collections_before = await full_collections(service, admin)
        sent, answered = await finish_jobs(port, settings, jobs, args.rate)
        with contextlib.suppress(TimeoutError):  # what has not come by then is counted lost
            await asyncio.wait_for(arrivals.complete.wait(), 30)
        under_load = await counter.since(before_load)
        collections_after = await full_collections(service, admin)
        await close_all(writers)
    await counter.close()
    gc_runs = collections_after[0] - collections_before[0]
    gc_pause = collections_after[1] - collections_before[1]
    latencies = sorted(
        (arrivals.at[job_id] - at) * 1000 for job_id, at in sent.items() if job_id in arrivals.at
    )
    answers = sorted((answered[job_id] - at) * 1000 for job_id, at in sent.items())
    return {
        "streams": streams,
        **bare,
        "service_kb_per_stream": round((rss_after - rss_before) * 1024 / streams, 1),
        "service_rss_mb_before": round(rss_before, 1),
        "idle_transactions_per_s_without_streams": round(without, 2),
        "idle_transactions_per_s_with_streams": round(held, 2),
        "idle_transactions_per_s_from_streams": round(held - without, 2),
        "moves": moves,
        "moves_received": len(latencies),
        "transactions_per_move": round(under_load / moves, 2),
        "latency_ms_p50": round(percentile(latencies, 50), 1),
        "latency_ms_p99": round(percentile(latencies, 99), 1),
        "latency_ms_max": round(latencies[-1], 1),
        "callback_answer_ms_p50": round(percentile(answers, 50), 1),
        "callback_answer_ms_p99": round(percentile(answers, 99), 1),
        "full_collections_under_load": gc_runs,
        "full_collection_pause_s_under_load": round(gc_pause, 3),
    }


async def main(args: argparse.Namespace) -> None:
    rows = []
    for streams in args.streams:
        async with migrated_database("bench_sse_fanout") as url:
            row = await measure(url, streams, args)
        print(row, flush=True)
        rows.append(row)
    columns = [
        ("streams", "streams"),
        ("bare sse KB", "bare_sse_starlette_kb_per_stream"),
        ("plain KB", "plain_streaming_response_kb_per_stream"),
        ("ours KB", "service_kb_per_stream"),
        ("idle tx/s", "idle_transactions_per_s_from_streams"),
        ("tx/move", "transactions_per_move"),
        ("received", "moves_received"),
        ("p50 ms", "latency_ms_p50"),
        ("p99 ms", "latency_ms_p99"),
        ("full GCs", "full_collections_under_load"),
        ("GC pause s", "full_collection_pause_s_under_load"),
    ]
    print("\n" + " ".join(f"{title:>12}" for title, _ in columns))
    for row in rows:
        print(" ".join(f"{row[key]!s:>12}" for _, key in columns))
    write_results("sse_fanout", {"rate": args.rate, "seconds": args.seconds, "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--rate", type=float, default=100.0, help="jobs finishing per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="of jobs finishing")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
