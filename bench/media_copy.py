"""The media copy: one large video, and many at once, against a plain streamed download to
disk measured in the same run.

The simulator (its own process) serves a real MP4 made as large as asked (an ISO-BMFF
`free` box after the video). "ours" is what the media worker does for each video
(`MediaWorker.store_copy`: the checked download into a staging file, the probe and the
poster with PyAV, the upload into the local media folder); "plain" is httpx streaming
the same URL into a file, nothing else. Rounds alternate and report medians; peak RSS
growth is the process's high-water mark (`VmHWM`, reset before each round through
`/proc/self/clear_refs`) above its RSS at the round's start. Both sides end with their
bytes removed from disk (the baseline's file, our stored objects), so neither pays for
the other's page cache writeback.

    .venv/bin/python -m bench.media_copy --mb 200 --concurrent 20 --concurrent-mb 20
"""

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.kit.bounded_child import BoundedChildren
from app.media.copier import CopyOrder, MediaWorker
from app.media.keys import job_keys
from app.storage.objects import ObjectStore
from bench.common import (
    RESULTS,
    SECRETS,
    machine,
    print_table,
    reset_peak_rss,
    status_kib,
    write_results,
)
from testkit.harness import free_port, plain_settings

SIM_KEY = "bench-sim-key"
AUTH = {"Authorization": f"Bearer {SIM_KEY}"}
MIB = 1024 * 1024


async def measure(work: Callable[[], Awaitable[int]]) -> dict[str, float]:
    """Run `work` (returns bytes moved) and report its rate and peak RSS growth."""
    start_rss = reset_peak_rss()
    started = time.perf_counter()
    moved = await work()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "mib_per_second": moved / MIB / seconds,
        "peak_rss_growth_mib": (status_kib("VmHWM") - start_rss) / 1024,
    }


async def plain_download(http: httpx.AsyncClient, url: str, folder: Path) -> int:
    """The baseline: stream the body to a file, nothing else."""
    path = folder / f"plain-{uuid.uuid4().hex}"
    size = 0
    with path.open("wb") as output:
        async with http.stream("GET", url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                output.write(chunk)
                size += len(chunk)
    path.unlink()
    return size


async def new_video(sim: httpx.AsyncClient, pad_bytes: int) -> str:
    """A finished simulator task whose result is about `pad_bytes` large; its URL."""
    await sim.patch("/_sim/config", json={"result_pad_bytes": pad_bytes})
    created = await sim.post(
        "/v2/generate",
        json={"model": "seedance-2-mini", "prompt": "bench", "duration": 8},
        headers=AUTH,
    )
    task_id = created.json()["data"]["task_id"]
    while True:
        status = await sim.get(
            "/v2/status",
            params={"task_id": task_id},
            headers={"Authorization": f"Bearer {SIM_KEY}"},
        )
        data = status.json()["data"]
        if data["status"] == "SUCCESS":
            return data["response"][0]
        await asyncio.sleep(0.05)


def order(url: str) -> CopyOrder:
    return CopyOrder(uuid.uuid4(), 1, url, "720p", "16:9", 8, "bench", "a benchmark")


@contextmanager
def simulator_process() -> Iterator[str]:
    """The simulator in a process of its own (its serving does not load ours)."""
    port = free_port()
    RESULTS.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "simulator", "--port", str(port)]
    command += ["--set", f"api_key={SIM_KEY}", "--set", "task_seconds=0"]
    with (RESULTS / "media_copy.log").open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def run(args: argparse.Namespace, base: str, folder: Path) -> dict[str, Any]:
    settings = plain_settings(
        media_root=str(folder / "media"),
        media_trusted_origins=[base],
        media_max_bytes=4 * 1024 * MIB,
        **SECRETS,
    )
    storage = ObjectStore(settings)
    children = BoundedChildren()
    worker = MediaWorker(None, storage, settings, children)  # type: ignore[arg-type]  # copies touch no rows
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as sim:
            for _ in range(100):
                try:
                    await sim.get("/_sim/stats")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            big = await new_video(sim, args.mb * MIB)
            small = [await new_video(sim, args.concurrent_mb * MIB) for _ in range(args.concurrent)]
        timeout = httpx.Timeout(60, connect=10)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:

            async def plain_one() -> int:
                return await plain_download(http, big, folder)

            async def ours(url: str) -> int:
                """One copy, then its objects removed (as the baseline removes its file)."""
                job = order(url)
                copy = await worker.store_copy(job)
                for key in job_keys(job.job_id):
                    await storage.delete(key)
                return copy.size

            async def ours_one() -> int:
                return await ours(big)

            async def plain_many() -> int:
                return sum(await asyncio.gather(*(plain_download(http, u, folder) for u in small)))

            async def ours_many() -> int:
                return sum(await asyncio.gather(*(ours(u) for u in small)))

            rounds: dict[str, list[dict[str, float]]] = {
                "plain_one": [],
                "ours_one": [],
                "plain_many": [],
                "ours_many": [],
            }
            for _ in range(args.rounds):
                for name, work in (
                    ("plain_one", plain_one),
                    ("ours_one", ours_one),
                    ("plain_many", plain_many),
                    ("ours_many", ours_many),
                ):
                    rounds[name].append(await measure(work))
    finally:
        await worker.close()
        await children.close()
        storage.close()
    medians = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in rounds.items()
    }
    for name, results in rounds.items():  # the first round also pays one-time set-ups
        medians[name]["max_peak_rss_growth_mib"] = max(r["peak_rss_growth_mib"] for r in results)
    return {"args": vars(args), "rounds": rounds, "medians": medians, "machine": machine()}


def rss(figures: dict[str, float]) -> str:
    return f"{figures['peak_rss_growth_mib']:.1f} / {figures['max_peak_rss_growth_mib']:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200, help="size of the one large video")
    parser.add_argument("--concurrent", type=int, default=20, help="copies at once")
    parser.add_argument("--concurrent-mb", type=int, default=20, help="size of each of those")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where staging and media folders go")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-media-", dir=args.dir))
    try:
        with simulator_process() as base:
            figures = asyncio.run(run(args, base, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    m = figures["medians"]
    rows = []
    for label, plain, ours in (
        (f"one {args.mb} MiB video", "plain_one", "ours_one"),
        (f"{args.concurrent} x {args.concurrent_mb} MiB at once", "plain_many", "ours_many"),
    ):
        rows.append(
            [
                label,
                f"{m[plain]['mib_per_second']:.0f} MiB/s",
                f"{m[ours]['mib_per_second']:.0f} MiB/s",
                f"{m[ours]['mib_per_second'] / m[plain]['mib_per_second']:.0%}",
                rss(m[plain]),
                rss(m[ours]),
            ]
        )
    print_table(
        f"media copy, medians of {args.rounds} alternating rounds",
        ["what", "plain", "ours", "ours / plain", "plain RSS + (median / max)", "ours RSS +"],
        rows,
    )
    print(write_results("media_copy", figures))


if __name__ == "__main__":
    main()
