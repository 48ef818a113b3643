"""A `multipart/form-data` body with one `file`, written to a staged file as it arrives.

python-multipart parses the body chunk by chunk as the client sends it; the file's bytes
go to disk in slices of at most `FLUSH_BYTES`, so an upload never sits whole in memory,
and it is cut off the moment it passes the caller's cap for what it claims to be (413),
without reading the rest.
"""

import hashlib
import mimetypes
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.config import UploadKind
from app.kit.errors import ProblemError, invalid_field

FILE_FIELD = "file"
FLUSH_BYTES = 256 * 1024
MAX_BOUNDARY = 70  # RFC 2046, section 5.1.1


@dataclass(slots=True)
class Received:
    size: int
    claimed: UploadKind | None  # what its part's Content-Type, else its file name, says
    digest: "hashlib._Hash"  # sha256 of the bytes as sent (a taken-down video is refused by it)


def claimed_kind(content_type: str | None, filename: str | None) -> UploadKind | None:
    """What the client says the file is (to be checked against what it is)."""
    if not content_type or content_type == "application/octet-stream":
        content_type = mimetypes.guess_type(filename or "")[0]
    major = (content_type or "").split("/", 1)[0].strip().lower()
    return UploadKind(major) if major in UploadKind.__members__.values() else None


@dataclass(slots=True)
class _Part:
    """The parser's events for the part being read (its callbacks cannot await)."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    started: bool = False  # its headers are complete
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False


def _too_large(cap: int) -> ProblemError:
    return ProblemError(413, "upload_too_large", f"The file is larger than {cap} bytes.")


async def receive_file(
    chunks: AsyncIterator[bytes],
    content_type: str,
    path: Path,
    cap_for: Callable[[UploadKind | None], int],
    take: Callable[[int], None],
) -> Received:
    """Write the body's one `file` part to `path`, each slice `take`n from the staging
    quota first; problem errors for anything else."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ProblemError(
            415, "unsupported_media_type", "Send the file as multipart/form-data, field `file`."
        )
    if len(boundary) > MAX_BOUNDARY:
        raise invalid_field(
            FILE_FIELD,
            "invalid_multipart",
            f"the multipart boundary is longer than {MAX_BOUNDARY} characters (RFC 2046)",
            "The multipart body is malformed.",
        )
    parts: list[_Part] = []

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        parts[-1].header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        parts[-1].header_value += data[start:end]

    def on_header_end() -> None:
        part = parts[-1]
        part.headers[bytes(part.header_field).lower()] = bytes(part.header_value)
        part.header_field.clear()
        part.header_value.clear()

    def on_headers_finished() -> None:
        parts[-1].started = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    def on_part_end() -> None:
        parts[-1].ended = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received: Received | None = None
    cap = 0
    async with await anyio.open_file(path, "wb") as file:
        async for chunk in chunks:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise invalid_field(
                    FILE_FIELD, "invalid_multipart", str(exc), "The multipart body is malformed."
                ) from None
            if not parts or not parts[0].started:
                continue
            if received is None:
                received, cap = _first_part(parts[0], cap_for)
            if len(parts) > 1 and parts[1].started:
                raise _unexpected(parts[1])
            first = parts[0]
            if received.size + len(first.data) > cap:
                raise _too_large(cap)
            if len(first.data) >= FLUSH_BYTES or first.ended:
                take(len(first.data))
                received.size += len(first.data)
                received.digest.update(first.data)
                await file.write(bytes(first.data))
                first.data.clear()
    if received is None or not parts[0].ended:
        raise invalid_field(
            FILE_FIELD, "missing", "give one file as the field `file`", "No file was sent."
        )
    return received


def _disposition(part: _Part) -> tuple[str, str | None]:
    _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
    name = options.get(b"name", b"").decode("utf-8", "replace")
    filename = options.get(b"filename")
    return name, filename.decode("utf-8", "replace") if filename is not None else None


def _first_part(part: _Part, cap_for: Callable[[UploadKind | None], int]) -> tuple[Received, int]:
    name, filename = _disposition(part)
    if name != FILE_FIELD:
        raise _unexpected(part)
    if filename is None:
        raise invalid_field(
            FILE_FIELD,
            "not_a_file",
            "`file` must be a file part (with a filename), not a text field",
            "The field `file` holds text, not a file.",
        )
    content_type = part.headers.get(b"content-type", b"").decode("latin-1")
    claimed = claimed_kind(content_type, filename)
    return Received(size=0, claimed=claimed, digest=hashlib.sha256()), cap_for(claimed)


def _unexpected(part: _Part) -> ProblemError:
    name, _ = _disposition(part)
    return invalid_field(
        name[:64] or FILE_FIELD,
        "unexpected_field",
        "the form takes one file, as the field `file`, and nothing else",
        "The form holds a field other than `file`.",
    )
