"""Real, tiny H.264 MP4s made to order (PyAV), so a simulated task delivers a video whose
size, shape and length are those asked for, like the real API's, and probing it means
something. Frames are flat colours, so a 15-second 720p video is about 130 KB."""

import functools
import io
import struct
from collections.abc import Iterator
from fractions import Fraction

import av

FPS = 2
SHORT_SIDE = {"480p": 480, "720p": 720}
RATIOS = {"16:9": (16, 9), "9:16": (9, 16), "4:3": (4, 3), "3:4": (3, 4), "1:1": (1, 1)}
RATIOS.update({"21:9": (21, 9), "adaptive": (16, 9)})


def dimensions(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """Width and height with the resolution as the short side (even, as H.264 wants)."""
    short = SHORT_SIDE.get(resolution, 720)
    w, h = RATIOS.get(aspect_ratio, (16, 9))
    if w >= h:
        return (short * w // h) // 2 * 2, short
    return short, (short * h // w) // 2 * 2


@functools.lru_cache(maxsize=64)
def render(width: int, height: int, seconds: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(seconds * FPS):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, value in zip(frame.planes, (40 + index * 7 % 180, 90, 160), strict=True):
                plane.update(bytes([value]) * plane.buffer_size)
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


PAD_CHUNK = bytes(1024 * 1024)


def padded_size(video: bytes, extra_bytes: int) -> int:
    return len(video) + (extra_bytes if extra_bytes >= 8 else 0)


def padded(video: bytes, extra_bytes: int) -> Iterator[bytes]:
    """The video followed by an ISO-BMFF `free` box of `extra_bytes`: still a valid MP4, as
    large as wanted (size caps, copy benchmarks), produced without holding it in memory."""
    yield video
    if extra_bytes < 8:
        return
    yield struct.pack(">I4s", extra_bytes, b"free")
    left = extra_bytes - 8
    while left > 0:
        yield PAD_CHUNK[: min(left, len(PAD_CHUNK))]
        left -= len(PAD_CHUNK)
