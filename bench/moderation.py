"""What moderation costs.

1. `POST /jobs` with the `openai` provider, against a fake of OpenAI's moderation API
   answering in `--latency` (50 ms), vs the `rules` provider, both servers up in the same
   run on the same database, wrk alternating between them for `--rounds` rounds (each
   reports its median round). The goal: at 64 connections, at most 20% fewer creates a
   second with the provider's round trip in every create. The fake runs in this process
   (its answers are a sleep and a few dicts).
2. The output stage's CPU on one 8-second 720p clip (24 fps, a keyframe every 2 s, as
   generated video is): the probe alone, the probe with `MODERATION_OUTPUT_FRAMES` (4)
   sampled frames, and, as a baseline, decoding every frame. The goal: under 300 ms of
   CPU for the sampling, decoding only the frames it needs.

    .venv/bin/python -m bench.moderation --seconds 10 --connections 64
"""

import argparse
import asyncio
import io
import resource
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from PIL import Image, ImageChops

from app.identity.tokens import issue_token
from app.media.probe import Limits, probe
from bench.api_throughput import BODY, USERS, alternating, line
from bench.common import (
    RESULTS,
    SECRETS,
    migrated_database,
    print_table,
    server,
    server_pid,
    service_env,
    write_results,
)
from testkit.harness import plain_settings
from testkit.moderation_fake import FakeModeration, fake_moderation

APP = "app.main:create_app"


async def creates(args: Any) -> list[dict[str, Any]]:
    settings = plain_settings(**SECRETS)
    tokens = [f"Bearer {issue_token(settings, f'user-{i}')}" for i in range(USERS)]
    posts = [line("POST", "/jobs", token, BODY) for token in tokens]
    log = RESULTS / "moderation.log"
    fake = FakeModeration(latency_seconds=args.latency)
    async with migrated_database("bench_moderation") as url, fake_moderation(fake) as fake_url:
        rules = service_env(url, args.port, moderation_provider="rules")
        openai = service_env(
            url,
            args.port + 1,
            moderation_provider="openai",
            moderation_openai_base_url=f"{fake_url}/v1",
            moderation_openai_api_key="sk-bench",
        )
        with (
            server(APP, args.port, 1, rules, log) as rules_url,
            server(APP, args.port + 1, 1, openai, log) as openai_url,
        ):
            targets = {
                "rules": (rules_url, server_pid(APP, args.port)),
                "openai": (openai_url, server_pid(APP, args.port + 1)),
            }
            medians = await alternating(targets, posts, args, also={"fake": "self"})
    return [
        {
            "provider": name,
            "rps": figures["rps"],
            "p50_ms": figures["p50_ms"],
            "p99_ms": figures["p99_ms"],
            "errors": figures["not_ok"],
            "of_rules": f"{figures['rps'] / medians['rules']['rps']:.0%}",
            "service_cpu_ms_per_create": figures["service_cpu_ms"],
            "fake_cpu_ms_per_create": figures["fake_cpu_ms"],
            "rounds": figures["rounds"],
        }
        for name, figures in medians.items()
    ]


def clip(path: Path, seconds: int = 8, fps: int = 24) -> None:
    """An 8-second 720p H.264 clip whose frames change (noise over a moving gradient), with
    a keyframe every 2 seconds."""
    gradient = Image.linear_gradient("L").resize((1280, 720)).convert("RGB")
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(2 * fps), "keyint_min": str(2 * fps)}
        for index in range(seconds * fps):
            noise = Image.effect_noise((1280, 720), 24).convert("RGB")
            image = ImageChops.add(ImageChops.offset(gradient, index * 8, 0), noise, scale=1.5)
            frame = av.VideoFrame.from_image(image)
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def cpu_ms(work: Any, repeat: int) -> float:
    """The median CPU time of `work()` over `repeat` runs, in ms."""
    times = []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_SELF)
        work()
        after = resource.getrusage(resource.RUSAGE_SELF)
        times.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return round(sorted(times)[len(times) // 2], 1)


def decode_everything(path: Path) -> None:
    with av.open(str(path)) as container:
        for _ in container.decode(video=0):
            pass


def output_stage(args: Any) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        clip(path)
        limits = Limits.for_job("720p", 8)
        wall = time.perf_counter()  # the first run: the libraries' first use included
        sampled = probe(path, limits, args.frames)
        wall_ms = round((time.perf_counter() - wall) * 1000, 1)
        probe_only = cpu_ms(lambda: probe(path, limits, 0), args.repeat)
        with_frames = cpu_ms(lambda: probe(path, limits, args.frames), args.repeat)
        everything = cpu_ms(lambda: decode_everything(path), args.repeat)
        sizes = [Image.open(io.BytesIO(jpeg)).size for jpeg in sampled.sample_jpegs]
        return [
            {
                "clip": f"{path.stat().st_size // 1024} KiB, 8 s, 1280x720, 24 fps, GOP 48",
                "probe_cpu_ms": probe_only,
                "probe_and_frames_cpu_ms": with_frames,
                "frames_cpu_ms": round(with_frames - probe_only, 1),
                "decode_all_cpu_ms": everything,
                "frames": len(sizes),
                "frame_size": f"{sizes[0][0]}x{sizes[0][1]}",
                "first_wall_ms": wall_ms,
            }
        ]


async def main(args: Any) -> None:
    RESULTS.mkdir(exist_ok=True)
    stage = output_stage(args)
    print_table(
        "Output stage: CPU per clip (median of runs)", list(stage[0]), [list(stage[0].values())]
    )
    rows = await creates(args)
    headers = [h for h in rows[0] if h != "rounds"]
    print_table(
        f"POST /jobs by provider ({args.seconds:g} s per run, wrk -t1 -c{args.connections}, "
        f"provider latency {args.latency * 1000:g} ms)",
        headers,
        [[r[h] for h in headers] for r in rows],
    )
    write_results("moderation", {"args": vars(args), "creates": rows, "output_stage": stage})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05, help="the provider's, seconds")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--port", type=int, default=8720)
    asyncio.run(main(parser.parse_args()))
