"""What a downloaded video really is, read by FFmpeg's own demuxers and decoders (PyAV):
dimensions, duration, frame rate, codec, audio, and a poster frame as a JPEG. A file
FFmpeg cannot open or decode is not a playable video, whatever its first bytes said.

Nothing is decoded before the container's headers pass `Limits`: a container and codecs
a browser plays (H.264, H.265, VP9, AV1 video; AAC or Opus audio; in MP4/MOV or WebM),
and dimensions, duration and frames within the job's (a 1.5 MB file holding one
16000x16000 frame would otherwise take gigabytes to decode). The probe runs in a child
process (`app/media/isolated_probe.py`) with its memory and CPU bounded by the kernel.
"""

import base64
import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from app.kit.bounded_child import ChildRefused

POSTER_AT_SECONDS = 1.0  # the first frame is often black or a fade-in
RESOLUTION_SHORT_SIDE = {"480p": 480, "720p": 720}
ASPECT_RATIOS = {"16:9": 16 / 9, "9:16": 9 / 16, "4:3": 4 / 3, "3:4": 3 / 4, "1:1": 1.0}
ASPECT_RATIOS["21:9"] = 21 / 9
DURATION_TOLERANCE_SECONDS = 1.0
ASPECT_TOLERANCE = 0.03


# FFmpeg's names: the MP4/MOV demuxer and the Matroska/WebM one
CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
VIDEO_CODECS = frozenset({"h264", "hevc", "vp9", "av1"})
AUDIO_CODECS = frozenset({"aac", "opus"})
MAX_FRAME_RATE = 60


class NotAVideo(Exception):
    """FFmpeg could not read a video stream from the file, or it is not one we play."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What a result may be before anything of it is decoded."""

    max_short_side: int
    max_long_side: int
    max_seconds: float

    @classmethod
    def for_job(cls, resolution: str, duration: int) -> "Limits":
        """Twice the asked size (a provider may deliver more than asked; not this much
        more) and twice the asked length, plus a little."""
        short = RESOLUTION_SHORT_SIDE.get(resolution, 720)
        return cls(2 * short, 2 * round(short * 21 / 9), 2 * duration + 5)

    @property
    def max_frames(self) -> int:
        return round(self.max_seconds * MAX_FRAME_RATE)


def check_headers(container: av.container.InputContainer, limits: Limits) -> av.VideoStream:
    """The video stream, if the headers say it may be decoded; NotAVideo otherwise."""
    if container.format.name not in CONTAINERS:
        raise NotAVideo(f"the container is {container.format.name}, not MP4 or WebM")
    if not container.streams.video:
        raise NotAVideo("the file has no video stream")
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if codec not in VIDEO_CODECS:
        raise NotAVideo(f"the video codec is {codec}, not one browsers play")
    for audio in container.streams.audio:
        if audio.codec_context.name not in AUDIO_CODECS:
            raise NotAVideo(f"the audio codec is {audio.codec_context.name}, not AAC or Opus")
    width, height = stream.codec_context.width, stream.codec_context.height
    short, long = sorted((width, height))
    if not 0 < short <= limits.max_short_side or long > limits.max_long_side:
        raise NotAVideo(f"the video is {width}x{height}, far larger than asked")
    seconds = container.duration / av.time_base if container.duration else None
    if seconds is not None and seconds > limits.max_seconds:
        raise NotAVideo(f"the video lasts {seconds:.0f} s, far longer than asked")
    if stream.frames > limits.max_frames:
        raise NotAVideo(f"the video has {stream.frames} frames, far more than asked")
    return stream


@dataclass(frozen=True, slots=True)
class VideoFacts:
    width: int
    height: int
    duration: float | None
    frame_rate: float | None
    video_codec: str
    has_audio: bool
    poster_jpeg: bytes
    # for moderation's output stage: small JPEGs of frames evenly spaced, first and last
    # included (none unless asked for)
    sample_jpegs: list[bytes]


SAMPLE_LONG_SIDE = 512  # what a moderation model looks at; smaller is cheaper to send


def _jpeg(frame: av.VideoFrame, long_side: int | None = None) -> bytes:
    width, height = frame.width, frame.height
    if long_side is not None and max(width, height) > long_side:
        scale = long_side / max(width, height)
        width, height = (
            max(2, round(width * scale) // 2 * 2),
            max(2, round(height * scale) // 2 * 2),
        )
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    packets = encoder.encode(frame.reformat(width=width, height=height, format="yuvj420p"))
    packets += encoder.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def _samples(
    container: av.container.InputContainer, stream: av.VideoStream, duration: float, count: int
) -> list[bytes]:
    """`count` frames evenly spaced, the first and the last keyframe among them: each the
    keyframe at or before its time, decoded alone (the decoder skips every other frame), so
    sampling costs a few frames, not a group of pictures each."""
    if count <= 0:
        return []
    count = max(2, count)
    stream.codec_context.skip_frame = "NONKEY"
    frames = []
    for index in range(count):
        at = duration * index / (count - 1)
        container.seek(
            int(at / stream.time_base) if stream.time_base else 0, stream=stream, backward=True
        )
        frames.append(next(container.decode(stream)))
    return [_jpeg(frame, SAMPLE_LONG_SIDE) for frame in frames]


def _poster(container: av.container.InputContainer, stream: av.VideoStream, at: float) -> bytes:
    if at > 0 and stream.time_base:
        container.seek(int(at / stream.time_base), stream=stream, backward=True)
    return _jpeg(next(container.decode(stream)))


def probe(path: Path, limits: Limits, samples: int = 0) -> VideoFacts:
    """The file's facts and poster, and `samples` frames for moderation."""
    try:
        with av.open(str(path)) as container:
            stream = check_headers(container, limits)
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
                sample_jpegs=_samples(container, stream, duration or 0.0, samples),
            )
    except (av.FFmpegError, StopIteration, ValueError) as exc:
        raise NotAVideo(f"the file is not a playable video: {exc}") from exc
    except MemoryError as exc:  # the kernel's limit of the probe's process
        raise NotAVideo("the video needs more memory to decode than a result may") from exc


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


def in_child(args: list[str]) -> dict[str, object]:
    """In the bounded child (`isolated_probe`): the facts of the file at `args[0]` within
    the `Limits` in `args[1]` (JSON) with `args[2]` sampled frames, the JPEGs in base64."""
    path, limits, samples = args
    try:
        facts = probe(Path(path), Limits(**json.loads(limits)), int(samples))
    except NotAVideo as exc:
        raise ChildRefused(str(exc)) from None
    fields = asdict(facts)
    fields["poster_jpeg"] = base64.b64encode(facts.poster_jpeg).decode()
    fields["sample_jpegs"] = [base64.b64encode(jpeg).decode() for jpeg in facts.sample_jpegs]
    return fields
