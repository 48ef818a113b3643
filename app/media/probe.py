"""What a downloaded video really is, read by FFmpeg's own demuxers and decoders (PyAV):
dimensions, duration, frame rate, codec, audio, and a poster frame as a JPEG. A file
FFmpeg cannot open or decode is not a playable video, whatever its first bytes said.

PyAV is blocking C code: callers run `probe` in a worker thread.
"""

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

POSTER_AT_SECONDS = 1.0  # the first frame is often black or a fade-in
RESOLUTION_SHORT_SIDE = {"480p": 480, "720p": 720}
ASPECT_RATIOS = {"16:9": 16 / 9, "9:16": 9 / 16, "4:3": 4 / 3, "3:4": 3 / 4, "1:1": 1.0}
ASPECT_RATIOS["21:9"] = 21 / 9
DURATION_TOLERANCE_SECONDS = 1.0
ASPECT_TOLERANCE = 0.03


class NotAVideo(Exception):
    """FFmpeg could not read a video stream from the file."""


@dataclass(frozen=True, slots=True)
class VideoFacts:
    width: int
    height: int
    duration: float | None
    frame_rate: float | None
    video_codec: str
    has_audio: bool
    poster_jpeg: bytes


def _poster(container: av.container.InputContainer, stream: av.VideoStream, at: float) -> bytes:
    if at > 0 and stream.time_base:
        container.seek(int(at / stream.time_base), stream=stream, backward=True)
    frame = next(container.decode(stream))
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    packets = encoder.encode(frame.reformat(format="yuvj420p"))
    packets += encoder.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def probe(path: Path) -> VideoFacts:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise NotAVideo("the file has no video stream")
            stream = container.streams.video[0]
            duration = container.duration / av.time_base if container.duration else None
            rate = stream.average_rate
            at = min(POSTER_AT_SECONDS, duration / 2) if duration else 0.0
            return VideoFacts(
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                duration=duration,
                frame_rate=float(rate) if rate else None,
                video_codec=stream.codec_context.name,
                has_audio=bool(container.streams.audio),
                poster_jpeg=_poster(container, stream, at),
            )
    except (av.FFmpegError, StopIteration, ValueError) as exc:
        raise NotAVideo(f"the file is not a playable video: {exc}") from exc


def mismatches(
    facts: VideoFacts, *, resolution: str, aspect_ratio: str, duration: int
) -> str | None:
    """How the delivered video differs from what the job asked for, or None."""
    found = []
    short_side = min(facts.width, facts.height)
    if short_side != RESOLUTION_SHORT_SIDE.get(resolution, short_side):
        found.append(f"resolution: asked {resolution}, got {facts.width}x{facts.height}")
    ratio = ASPECT_RATIOS.get(aspect_ratio)
    if ratio is not None and abs(facts.width / facts.height / ratio - 1) > ASPECT_TOLERANCE:
        found.append(f"aspect ratio: asked {aspect_ratio}, got {facts.width}x{facts.height}")
    if facts.duration is not None and abs(facts.duration - duration) > DURATION_TOLERANCE_SECONDS:
        found.append(f"duration: asked {duration}s, got {facts.duration:.1f}s")
    return "; ".join(found) or None
