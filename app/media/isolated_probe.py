"""The probe (`app/media/probe.py`) in a child process of its own, bounded for real.

A thread cannot be stopped: a copy's deadline used to cancel the wait while FFmpeg went on
decoding, and the thread outlived its slot in MEDIA_COPY_CONCURRENCY. A child process forked
from a warm zygote (`app/kit/bounded_child.py`) has its address space and CPU time capped by
the kernel (MEDIA_PROBE_MEMORY_BYTES, and a CPU limit a second past MEDIA_PROBE_SECONDS),
is killed at MEDIA_PROBE_SECONDS or when its copy is cancelled, and is waited for before the
copy ends, so it holds its slot until it is gone.
"""

import base64
import json
from dataclasses import asdict
from pathlib import Path

from app.config import Settings
from app.kit.bounded_child import BoundedChildren, Bounds, ChildRefused
from app.media.probe import Limits, NotAVideo, VideoFacts


async def probe_isolated(
    children: BoundedChildren, path: Path, limits: Limits, settings: Settings, samples: int = 0
) -> VideoFacts:
    """The facts of the file at `path`, and `samples` frames for moderation."""
    bounds = Bounds(settings.media_probe_memory_bytes, settings.media_probe_seconds)
    args = [str(path), json.dumps(asdict(limits)), str(samples)]
    try:
        fields = await children.run("app.media.probe", args, bounds, "checking the video")
    except ChildRefused as exc:
        raise NotAVideo(str(exc)) from None
    fields["poster_jpeg"] = base64.b64decode(fields["poster_jpeg"])
    fields["sample_jpegs"] = [base64.b64decode(jpeg) for jpeg in fields["sample_jpegs"]]
    return VideoFacts(**fields)
