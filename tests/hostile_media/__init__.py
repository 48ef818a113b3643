"""Hostile result files, made by the tests (none is committed): what a compromised or
broken upstream could hand the media copier. Each is small on disk."""

from fractions import Fraction
from pathlib import Path

import av


def _write(path: Path, container_format: str, codec: str, width: int, height: int) -> Path:
    """One second of a flat frame in `codec`, `width` x `height`."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if codec == "png" else "yuv420p"
        stream.time_base = Fraction(1, 1)
        frame = av.VideoFrame(width, height, stream.pix_fmt)
        for plane in frame.planes:
            plane.update(bytes([90]) * plane.buffer_size)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def png_in_mov(path: Path) -> Path:
    """A MOV holding a PNG frame: FFmpeg decodes it, no browser plays it."""
    return _write(path, "mov", "png", 640, 480)


def oversized_h264(path: Path) -> Path:
    """An H.264 MP4 far larger than a 480p job: its frame costs what its header says."""
    return _write(path, "mp4", "libx264", 2400, 1800)
