"""Real input files made by the tests (none is committed): photos as phones make them
(EXIF orientation and GPS, HEIC), hostile images, reference video and audio."""

import io
import math
import struct
import zlib
from fractions import Fraction

import av
import pillow_heif
from PIL import Image

from simulator.videos import render

MARK = (255, 0, 0)  # the upright picture's top-left corner: where a viewer must see it


def upright(width: int = 600, height: int = 800) -> Image.Image:
    """A picture as its owner saw it: grey, with a red block in the top-left corner."""
    image = Image.new("RGB", (width, height), (128, 128, 128))
    image.paste(MARK, (0, 0, width // 4, height // 4))
    return image


def _exif(orientation: int, gps: bool) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Apple"  # Make
    if gps:  # GPS IFD: latitude N 37 deg 19' 54", longitude W 122 deg 1' 48"
        exif[0x8825] = {1: "N", 2: (37.0, 19.0, 54.0), 3: "W", 4: (122.0, 1.0, 48.0)}
    return exif


def phone_jpeg(width: int = 600, height: int = 800, gps: bool = True) -> bytes:
    """A portrait photo stored sideways with EXIF orientation 6, as phone cameras do."""
    stored = upright(width, height).transpose(Image.Transpose.ROTATE_90)
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=_exif(6, gps), comment=b"taken at home")
    return buffer.getvalue()


def phone_heic(width: int = 600, height: int = 800, gps: bool = True) -> bytes:
    """The same photo as an iPhone's HEIC: pixels sideways, EXIF orientation 6, GPS."""
    stored = upright(width, height).transpose(Image.Transpose.ROTATE_90)
    heif = pillow_heif.from_pillow(stored)
    buffer = io.BytesIO()
    heif.save(buffer, quality=90, exif=_exif(6, gps).tobytes())
    return buffer.getvalue()


def jpeg_scan_bomb(scans: int = 5_000) -> bytes:
    """A progressive JPEG with `scans` scans: its first (a DC scan) repeated before the end
    of the image. Each one is a pass over every block: libjpeg reads them all."""
    buffer = io.BytesIO()
    upright(320, 320).save(buffer, "JPEG", progressive=True, quality=80)
    data = buffer.getvalue()
    first = data.index(b"\xff\xda")
    following = data.index(b"\xff\xda", first + 2)  # the next scan's marker ends this one
    return data[:first] + data[first:following] * scans + data[following:]


def png(width: int = 640, height: int = 480, alpha: bool = False) -> bytes:
    image = upright(width, height).convert("RGBA" if alpha else "RGB")
    if alpha:
        image.putalpha(128)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_bomb(side: int = 100_000) -> bytes:
    """A valid PNG header of `side` x `side` pixels (30 GB decoded) in a few KB of zeros."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + side * 3)
    data = b"".join(compressor.compress(row) for _ in range(64)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def webp(width: int = 640, height: int = 480) -> bytes:
    buffer = io.BytesIO()
    upright(width, height).save(buffer, "WEBP", exif=_exif(1, gps=True))
    return buffer.getvalue()


def polyglot() -> bytes:
    """A real JPEG followed by an HTML page and a ZIP: a file that is two things at once."""
    buffer = io.BytesIO()
    upright(400, 400).save(buffer, "JPEG")
    html = b"<html><script>alert(document.cookie)</script></html>"
    return buffer.getvalue() + html + b"PK\x03\x04" + b"\x00" * 26


def mp4(seconds: int = 3, width: int = 640, height: int = 360) -> bytes:
    return render(width, height, seconds)


def mp4_with_location(seconds: int = 3) -> bytes:
    """A phone video: H.264 and AAC with where it was shot in the container's metadata."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        container.metadata["location"] = "+37.3318-122.0312/"
        video = container.add_stream("libx264", rate=2)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        for index in range(seconds * 2):
            frame = av.VideoFrame(320, 240, "yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 2)
            container.mux(video.encode(frame))
        for frame in _tone(audio, seconds):
            container.mux(audio.encode(frame))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return buffer.getvalue()


def _tone(stream: av.AudioStream, seconds: float) -> list[av.AudioFrame]:
    rate, size = stream.rate, stream.codec_context.frame_size or 1024
    frames = []
    for start in range(0, int(seconds * rate), size):
        samples = [0.2 * math.sin(2 * math.pi * 440 * (start + i) / rate) for i in range(size)]
        layout = stream.codec_context.layout.name
        channels = len(stream.codec_context.layout.channels)
        plane = struct.pack(f"<{size}f", *samples)
        frame = av.AudioFrame(format="fltp", layout=layout, samples=size)
        for index in range(channels):
            frame.planes[index].update(plane)
        frame.pts, frame.sample_rate, frame.time_base = start, rate, Fraction(1, rate)
        frames.append(frame)
    return frames


def audio(container_format: str = "mp3", seconds: float = 3) -> bytes:
    """A tone in MP3 (with an ID3 title), M4A or WAV."""
    codec = {"mp3": "libmp3lame", "ipod": "aac", "wav": "pcm_s16le"}[container_format]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        container.metadata["title"] = "voice memo, 12 Elm Street"
        stream = container.add_stream(codec, rate=44100)
        context = stream.codec_context
        resampler = av.AudioResampler(context.format.name, context.layout.name, context.rate)
        for tone in _tone(stream, seconds):
            for frame in resampler.resample(tone):
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _patch_durations(data: bytearray, box: bytes, offset: int, divisor: int) -> None:
    """Divide the 32-bit duration `offset` bytes after each `box` name by `divisor`."""
    start = 0
    while (at := data.find(box, start)) >= 0:
        where = at + 4 + offset
        (duration,) = struct.unpack(">I", data[where : where + 4])
        data[where : where + 4] = struct.pack(">I", duration // divisor)
        start = at + 4


def mp4_with_short_header(seconds: int = 60, claimed: int = 10) -> bytes:
    """An MP4 whose headers (movie, tracks, media, edit lists) say `claimed` seconds over
    `seconds` of frames."""
    data = bytearray(mp4_with_location(seconds))
    divisor = seconds // claimed
    _patch_durations(data, b"mvhd", 16, divisor)  # version, flags, created, modified, scale
    _patch_durations(data, b"mdhd", 16, divisor)
    _patch_durations(data, b"tkhd", 20, divisor)  # ... modified, track id, reserved
    _patch_durations(data, b"elst", 8, divisor)  # version, flags, entry count
    return bytes(data)


def mp3_with_short_header(seconds: int = 60, claimed: float = 9.8) -> bytes:
    """An MP3 whose Xing/Info header counts the frames of `claimed` seconds over
    `seconds` of frames (FFmpeg takes the header's count for the length)."""
    data = bytearray(audio("mp3", seconds))
    at = max(data.find(b"Xing"), data.find(b"Info"))
    frames = round(claimed * 44100 / 1152)  # MPEG-1 layer III: 1152 samples a frame
    data[at + 8 : at + 12] = struct.pack(">I", frames)  # after the tag and its flags
    return bytes(data)
