"""What an uploaded file really is, and a clean copy of it to store and hand to Seedance.

Its bytes decide, never its name or the header that came with it: Pillow (with
pillow-heif for iPhone photos) reads JPEG, PNG, WebP and HEIC/HEIF; FFmpeg's demuxers
(PyAV) read MP4/MOV, MP3 and WAV. Nothing is decoded before its header is judged: an image's
dimensions and aspect ratio (Seedance's limits, a pixel cap against decompression bombs),
a video's container, codec, size and duration.

Nothing of the original is kept but its picture or its streams. An image is decoded, turned
upright by its EXIF orientation and encoded again (JPEG, or PNG when it has transparency),
so no EXIF (GPS above all), XMP, ICC profile, comment or trailing bytes (a polyglot's HTML
or ZIP) survive. A video or audio file is remuxed, packets copied without decoding, into a
new container that carries none of the original's metadata (a phone video's location) and
only the streams Seedance uses.

This runs in a child process bounded by the kernel, forked from a warm zygote that imported
this module once (`app/kit/bounded_child.py`): `in_child`.
"""

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import pillow_heif
from av.bitstream import BitStreamFilterContext
from PIL import Image, ImageOps, UnidentifiedImageError

from app.kit.bounded_child import ChildRefused

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF")
MP4 = "mov,mp4,m4a,3gp,3g2,mj2"  # FFmpeg's MP4/MOV demuxer
VIDEO_CODECS = frozenset({"h264", "hevc"})
# audio: FFmpeg's demuxer -> (codecs taken, muxer written, Content-Type stored)
AUDIO_FORMATS = {
    "mp3": (frozenset({"mp3", "mp3float"}), "mp3", "audio/mpeg"),
    "wav": (frozenset({"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le"}), "wav", "audio/wav"),
    MP4: (frozenset({"aac"}), "ipod", "audio/mp4"),
}
JPEG_QUALITY = 90
# a progressive JPEG has about 10 scans; each costs a pass over every block, so a file of
# thousands (empty DC scans: 100,000 in 1.8 MB) decodes for minutes: refused from its markers
JPEG_MAX_SCANS = 100
# decoding an image holds a few full copies of its pixels at 4 bytes each (Pillow's
# buffer, the upright and converted copies, the encoder's; libwebp's decoder more),
# besides the interpreter: what the header implies is checked against the child's cap
IMAGE_COPIES = {"WEBP": 5}
DEFAULT_IMAGE_COPIES = 4
INTERPRETER_BYTES = 128 * 1024 * 1024
SEI_UNITS = {"h264": "6", "hevc": "39|40"}  # the NAL unit types of SEI messages


class Refused(Exception):
    """The file is not one we take; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class Rules:
    """What an upload may be (the UPLOAD_* settings)."""

    image_min_side: int
    image_max_side: int
    image_min_aspect: float
    image_max_aspect: float
    image_max_bytes: int
    media_min_seconds: float
    media_max_seconds: float
    video_max_side: int
    decode_memory_bytes: int  # the child's cap: an image whose header implies more is refused


@dataclass(frozen=True, slots=True)
class Facts:
    kind: str
    content_type: str
    size_bytes: int
    sha256: str
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None


def sanitize(src: Path, dst: Path, rules: Rules) -> Facts:
    """Write the clean copy of `src` to `dst` and say what it is; Refused otherwise."""
    try:
        facts = _image(src, dst, rules)
    except UnidentifiedImageError:  # no image format of ours recognised its header
        facts = _media(src, dst, rules)
    size, digest = _digest(dst)
    return Facts(**{**asdict(facts), "size_bytes": size, "sha256": digest})


def _image(src: Path, dst: Path, rules: Rules) -> Facts:
    Image.MAX_IMAGE_PIXELS = rules.image_max_side**2  # Pillow's own bomb check, at open
    try:
        with Image.open(src, formats=IMAGE_FORMATS) as image:
            width, height = image.size  # from the header: nothing is decoded yet
            _check_image_size(width, height, rules)
            _check_decode_memory(image.format or "", width, height, rules)
            if image.format == "JPEG":
                _check_jpeg_scans(src)
            image.load()
            upright = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Refused(f"the image is too large to decode: {exc}") from exc
    except UnidentifiedImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's words for broken data
        raise Refused(f"the image cannot be decoded: {exc}") from exc
    width, height = upright.size
    has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
    clean = upright.convert("RGBA" if has_alpha else "RGB")
    clean.info.clear()  # nothing of the original's metadata is written again
    content_type = "image/png" if has_alpha else "image/jpeg"
    if has_alpha:
        clean.save(dst, "PNG")
    if not has_alpha or dst.stat().st_size > rules.image_max_bytes:
        if has_alpha:  # a PNG past Seedance's size: flattened on white, as a JPEG
            background = Image.new("RGB", clean.size, "white")
            background.paste(clean, mask=clean.getchannel("A"))
            clean, content_type = background, "image/jpeg"
        clean.save(dst, "JPEG", quality=JPEG_QUALITY)
    if dst.stat().st_size > rules.image_max_bytes:
        raise Refused(f"the image is larger than {rules.image_max_bytes} bytes once encoded")
    return Facts("image", content_type, 0, "", width, height)


def _check_image_size(width: int, height: int, rules: Rules) -> None:
    short, long = sorted((width, height))
    if short < rules.image_min_side or long > rules.image_max_side:
        raise Refused(
            f"the image is {width}x{height}; each side must be {rules.image_min_side} to "
            f"{rules.image_max_side} pixels"
        )
    if not rules.image_min_aspect <= width / height <= rules.image_max_aspect:
        raise Refused(
            f"the image is {width}x{height}; its width / height must be "
            f"{rules.image_min_aspect:g} to {rules.image_max_aspect:g}"
        )


def _check_decode_memory(image_format: str, width: int, height: int, rules: Rules) -> None:
    copies = IMAGE_COPIES.get(image_format, DEFAULT_IMAGE_COPIES)
    needed = width * height * 4 * copies + INTERPRETER_BYTES
    if needed > rules.decode_memory_bytes:
        mib = 1024 * 1024
        raise Refused(
            f"the {width}x{height} image needs about {needed // mib} MiB to decode; an "
            f"upload may use {rules.decode_memory_bytes // mib} MiB"
        )


def _check_jpeg_scans(src: Path) -> None:
    """Count the JPEG's scans from its markers, before any decoding."""
    scans = 0
    for marker in _jpeg_markers(src.read_bytes()):
        if marker == 0xDA:  # start of scan
            scans += 1
            if scans > JPEG_MAX_SCANS:
                raise Refused(f"the JPEG has more than {JPEG_MAX_SCANS} scans")


def _jpeg_markers(data: bytes) -> Iterator[int]:
    """The markers of a JPEG's segments, in order: each segment's length is skipped (its
    payload may hold any bytes), and a scan's entropy-coded data up to the next marker
    that is neither a stuffed 0xFF00 nor a restart (RSTn)."""
    at = 2  # after SOI
    while at + 4 <= len(data):
        if data[at] != 0xFF:  # junk between segments: libjpeg skips to the next 0xFF too
            at = data.find(b"\xff", at)
            if at < 0:
                return
            continue
        marker = data[at + 1]
        if marker == 0xFF:  # fill bytes before a marker
            at += 1
            continue
        if marker == 0xD9:  # end of image
            return
        yield marker
        if marker in _STANDALONE:
            at += 2
            continue
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDA:
            at = _end_of_entropy_data(data, at)


_STANDALONE = frozenset({0x00, 0x01, 0xD8, *range(0xD0, 0xD8)})  # markers without a length


def _end_of_entropy_data(data: bytes, at: int) -> int:
    while (at := data.find(b"\xff", at)) >= 0 and at + 1 < len(data):
        following = data[at + 1]
        if following != 0x00 and not 0xD0 <= following <= 0xD7:
            return at
        at += 2
    return len(data)


def _media(src: Path, dst: Path, rules: Rules) -> Facts:

    try:
        container = av.open(str(src))
    except (av.FFmpegError, ValueError) as exc:
        raise Refused("the file is not an image, video or audio file we take") from exc
    with container:
        videos = [s for s in container.streams.video if not _is_cover_art(s)]
        audios = list(container.streams.audio)
        seconds = container.duration / av.time_base if container.duration else None
        if videos:
            streams, facts, muxer = _video(container.format.name, videos[0], audios, rules)
        elif audios:
            streams, facts, muxer = _audio(container.format.name, audios[0])
        else:
            raise Refused("the file has no picture, video or audio we can read")
        if seconds is None or not rules.media_min_seconds <= seconds <= rules.media_max_seconds:
            length = "an unknown length" if seconds is None else f"{seconds:.1f} s"
            raise Refused(
                f"the {facts.kind} lasts {length}; it must last {rules.media_min_seconds:g} "
                f"to {rules.media_max_seconds:g} s"
            )
        try:
            spanned = _remux(container, streams, dst, muxer, rules.media_max_seconds)
        except av.FFmpegError as exc:
            raise Refused(f"the {facts.kind} cannot be read: {exc}") from exc
        if spanned < rules.media_min_seconds:
            raise Refused(
                f"the {facts.kind}'s frames last {spanned:.1f} s; it must last "
                f"{rules.media_min_seconds:g} to {rules.media_max_seconds:g} s"
            )
    return Facts(**{**asdict(facts), "duration_seconds": round(spanned, 3)})


def _is_cover_art(stream: "av.stream.Stream") -> bool:
    from av.stream import Disposition

    return bool(stream.disposition & Disposition.attached_pic)


def _video(
    container_format: str,
    stream: "av.VideoStream",
    audios: "list[av.AudioStream]",
    rules: Rules,
) -> "tuple[Sequence[av.stream.Stream], Facts, str]":
    if container_format != MP4:
        raise Refused(f"the video's container is {container_format}; MP4 or MOV is taken")
    codec = stream.codec_context.name
    if codec not in VIDEO_CODECS:
        raise Refused(f"the video's codec is {codec}; H.264 or H.265 is taken")
    width, height = stream.codec_context.width, stream.codec_context.height
    if not 0 < max(width, height) <= rules.video_max_side or min(width, height) <= 0:
        raise Refused(
            f"the video is {width}x{height}; its longest side may be {rules.video_max_side}"
        )
    kept = [stream] + [a for a in audios[:1] if a.codec_context.name == "aac"]
    return kept, Facts("video", "video/mp4", 0, "", width, height), "mp4"


def _audio(
    container_format: str, stream: "av.AudioStream"
) -> "tuple[Sequence[av.stream.Stream], Facts, str]":
    if container_format not in AUDIO_FORMATS:
        raise Refused(f"the audio's container is {container_format}; MP3, WAV or M4A is taken")
    codecs, muxer, content_type = AUDIO_FORMATS[container_format]
    if stream.codec_context.name not in codecs:
        raise Refused(f"the audio's codec is {stream.codec_context.name}, not one we take")
    return [stream], Facts("audio", content_type, 0, ""), muxer


def _remux(
    container: "av.container.InputContainer",
    streams: "Sequence[av.stream.Stream]",
    dst: Path,
    muxer: str,
    max_seconds: float,
) -> float:
    """Copy the streams' packets into a new container: no decoding, no metadata, no SEI
    messages in the video's bitstream (encoders' settings; cameras' serials or places).
    Returns the time the packets span: a header may say 9 s over 14 minutes of frames,
    so the packets are measured and reading stops once they pass `max_seconds`."""
    with av.open(str(dst), "w", format=muxer) as out:
        copies, filters = {}, {}
        for stream in streams:
            copy = out.add_stream_from_template(stream)
            copy.metadata.clear()
            copies[stream.index] = copy
            if (sei := SEI_UNITS.get(stream.codec_context.name)) is not None:
                filters[stream.index] = BitStreamFilterContext(
                    f"filter_units=remove_types={sei}", stream, copy
                )
        spans = _Spans()
        for packet in container.demux(streams):
            if packet.dts is None:  # the demuxer's flush packets
                continue
            if spans.add(packet) > max_seconds:
                raise Refused(f"the file lasts longer than {max_seconds:g} s")
            index = packet.stream.index
            for kept in filters[index].filter(packet) if index in filters else [packet]:
                kept.stream = copies[index]
                out.mux(kept)
        for index, bitstream in filters.items():
            for kept in bitstream.filter(None):
                kept.stream = copies[index]
                out.mux(kept)
    return spans.longest


class _Spans:
    """Each stream's first timestamp and the latest end of its packets, in seconds."""

    def __init__(self) -> None:
        self._first: dict[int, float] = {}
        self._end: dict[int, float] = {}
        self.longest = 0.0

    def add(self, packet: "av.Packet") -> float:
        """The longest span so far, this packet counted."""
        base = packet.time_base
        stamp = packet.pts if packet.pts is not None else packet.dts
        if base is None or stamp is None:
            return self.longest
        start = float(stamp * base)
        end = start + float((packet.duration or 0) * base)
        index = packet.stream.index
        first = self._first.setdefault(index, start)
        self._end[index] = max(self._end.get(index, first), end)
        self.longest = max(self.longest, self._end[index] - first)
        return self.longest


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()


def in_child(args: list[str]) -> dict[str, object]:
    """In the bounded child (`Uploads`): the facts of the file at `args[0]`, its clean
    copy written to `args[1]`, by the `Rules` in `args[2]` (JSON)."""
    src, dst, rules = args
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    pillow_heif.register_heif_opener()
    try:
        facts = sanitize(Path(src), Path(dst), Rules(**json.loads(rules)))
    except Refused as exc:
        Path(dst).unlink(missing_ok=True)
        raise ChildRefused(str(exc)) from None
    except MemoryError:  # the kernel's limit of this process
        Path(dst).unlink(missing_ok=True)
        raise ChildRefused("the file needs more memory to read than an upload may") from None
    return asdict(facts)
