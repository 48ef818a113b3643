"""The probe (`app/media/probe.py`) in a child process of its own, bounded for real.

A thread cannot be stopped: a copy's deadline used to cancel the wait while FFmpeg went on
decoding, and the thread outlived its slot in MEDIA_COPY_CONCURRENCY. A child process has
its address space and CPU time capped by the kernel (MEDIA_PROBE_MEMORY_BYTES, and a CPU
limit a second past MEDIA_PROBE_SECONDS), is killed at MEDIA_PROBE_SECONDS or when its copy
is cancelled, and is waited for before the copy ends, so it holds its slot until it is gone.
"""

import asyncio
import base64
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from app.config import Settings
from app.media.probe import Limits, NotAVideo, VideoFacts

NOT_A_VIDEO = 3  # the child's exit status for a file it refused


async def probe_isolated(path: Path, limits: Limits, settings: Settings) -> VideoFacts:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "app.media.probe", str(path), json.dumps(asdict(limits))),
        *(str(settings.media_probe_memory_bytes), str(math.ceil(settings.media_probe_seconds) + 1)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(settings.media_probe_seconds):
            out, err = await process.communicate()
    except TimeoutError:
        raise NotAVideo(
            f"checking the video took longer than {settings.media_probe_seconds:g} s"
        ) from None
    finally:
        if process.returncode is None:  # timed out, or the copy was cancelled
            process.kill()
            await process.wait()
    if process.returncode == NOT_A_VIDEO:
        raise NotAVideo(err.decode(errors="replace").strip()[:500])
    if process.returncode != 0:  # killed by its memory or CPU limit, or crashed
        raise NotAVideo(f"checking the video failed (exit status {process.returncode})")
    fields = json.loads(out)
    fields["poster_jpeg"] = base64.b64decode(fields["poster_jpeg"])
    return VideoFacts(**fields)
