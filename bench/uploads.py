"""`POST /uploads` under load: many 8 MB photos at once, against a plain streamed write of
the same bytes measured in the same run.

"ours" is the service as deployed (its own uvicorn process, production settings, local
media folder): each request's multipart body streamed to a staged file, the file decoded
and re-encoded in a bounded child process (at most UPLOAD_SANITIZE_CONCURRENCY at once),
the clean copy stored and its row written. "plain" is `bench/bare_app.py`'s
`/plain-upload`: the same request bodies streamed into a file and removed, nothing else.
Each image is a PNG of random pixels (incompressible, so 8 MB on the wire is 8 MB to
decode). Peak RSS growth is the server process's high-water mark (`VmHWM`, reset through
`/proc/<pid>/clear_refs` before each round) above its RSS at the round's start; the
sanitizing children are sampled every 20 ms and their largest RSS reported apart (each is
also capped by UPLOAD_SANITIZE_MEMORY_BYTES).

    .venv/bin/python -m bench.uploads --uploads 50 --mb 8
"""

import argparse
import asyncio
import io
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from app.identity.tokens import issue_token
from bench.common import (
    RESULTS,
    SECRETS,
    machine,
    migrated_database,
    print_table,
    reset_peak_rss,
    server,
    server_pid,
    service_env,
    status_kib,
    write_results,
)
from testkit.harness import free_port, plain_settings
from testkit.processes import descendants_of

MIB = 1024 * 1024


def noise_png(mb: int) -> bytes:
    side = math.isqrt(mb * MIB // 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


async def sample_children(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for child in descendants_of(pid):
            try:
                peak[0] = max(peak[0], status_kib("VmRSS", child))
            except (FileNotFoundError, ProcessLookupError, KeyError):  # ended meanwhile
                continue
        await asyncio.sleep(0.02)


async def round_of(
    url: str, pid: int, headers: list[dict[str, str]], bodies: list[bytes]
) -> dict[str, float]:
    """Each body from its own user (one user's uploads share half the slots at most)."""
    start_rss = reset_peak_rss(pid)
    peak_child, stop = [0], asyncio.Event()
    sampler = asyncio.create_task(sample_children(pid, peak_child, stop))
    timeout = httpx.Timeout(600, connect=10)
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as http:

        async def one(body: bytes, user: dict[str, str]) -> float:
            started = time.perf_counter()
            files = {"file": ("photo.png", body, "image/png")}
            response = await http.post(url, files=files, headers=user)
            assert response.status_code == 201, response.text
            return time.perf_counter() - started

        started = time.perf_counter()
        latencies = await asyncio.gather(*map(one, bodies, headers))
        seconds = time.perf_counter() - started
    stop.set()
    await sampler
    return {
        "seconds": seconds,
        "mib_per_second": sum(map(len, bodies)) / MIB / seconds,
        "uploads_per_second": len(bodies) / seconds,
        "p50_seconds": statistics.median(latencies),
        "max_seconds": max(latencies),
        "peak_rss_growth_mib": (status_kib("VmHWM", pid) - start_rss) / 1024,
        "peak_child_rss_mib": peak_child[0] / 1024,
    }


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    body = noise_png(args.mb)
    bodies = [body] * args.uploads
    rounds: dict[str, list[dict[str, float]]] = {"plain": [], "ours": []}
    async with migrated_database("bench_uploads") as database_url:
        ours_port, plain_port = free_port(), free_port()
        env = service_env(
            database_url,
            ours_port,
            media_root=str(folder / "media"),
            rate_limit_upload="100000/minute",
            uploads_per_day="100000",
            uploads_in_progress_per_address=str(args.uploads),  # every client is on loopback
            upload_sanitize_wait_seconds="600",  # throughput: every upload waits its turn
        )
        settings = plain_settings(**SECRETS)
        headers = [
            {"Authorization": f"Bearer {issue_token(settings, f'bench-user-{i}')}"}
            for i in range(args.uploads)
        ]
        plain_env = {**env, "TMPDIR": str(folder)}
        log = RESULTS / "uploads.log"
        with (
            server("app.main:create_app", ours_port, 1, env, log) as ours_url,
            server("bench.bare_app:create_app", plain_port, 1, plain_env, log) as plain_url,
        ):
            targets = {
                "ours": (f"{ours_url}/uploads", server_pid("app.main:create_app", ours_port)),
                "plain": (
                    f"{plain_url}/plain-upload",
                    server_pid("bench.bare_app:create_app", plain_port),
                ),
            }
            for _ in range(args.rounds):
                for name in ("plain", "ours"):
                    url, pid = targets[name]
                    rounds[name].append(await round_of(url, pid, headers, bodies))
                    shutil.rmtree(folder / "media" / "uploads", ignore_errors=True)
    medians = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in rounds.items()
    }
    return {
        "args": vars(args),
        "body_bytes": len(body),
        "rounds": rounds,
        "medians": medians,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=50, help="uploads at once")
    parser.add_argument("--mb", type=int, default=8, help="size of each image")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    try:
        figures = asyncio.run(measure(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    m = figures["medians"]
    rows = [
        [
            name,
            f"{m[name]['mib_per_second']:.1f} MiB/s",
            f"{m[name]['uploads_per_second']:.2f}/s",
            f"{m[name]['p50_seconds']:.2f} s",
            f"{m[name]['max_seconds']:.2f} s",
            f"{m[name]['peak_rss_growth_mib']:.1f} MiB",
            f"{m[name]['peak_child_rss_mib']:.0f} MiB",
        ]
        for name in ("plain", "ours")
    ]
    rows.append(
        ["ours / plain", f"{m['ours']['mib_per_second'] / m['plain']['mib_per_second']:.0%}"]
    )
    print_table(
        f"{args.uploads} x {figures['body_bytes'] / MIB:.1f} MiB image uploads at once, "
        f"medians of {args.rounds} alternating rounds",
        ["what", "throughput", "uploads", "p50", "slowest", "server RSS +", "largest child"],
        [row + [""] * (7 - len(row)) for row in rows],
    )
    print(write_results("uploads", figures))


if __name__ == "__main__":
    main()
