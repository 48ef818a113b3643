"""Fetching a result video from Seedance's temporary URL, as untrusted input.

Every hop (the first URL and each redirect, followed by hand) must be public https by the
rules that user URLs follow, and its host must resolve only to public addresses, so a
result URL or a redirect can never make us fetch 127.0.0.1, a private network or a cloud
metadata address. The body is streamed to a staging file in constant memory, with the
size cap enforced as bytes arrive (whatever the headers announced), hashed on the way,
and accepted only if its first bytes are those of an ISO-BMFF (MP4) or WebM file: the
content decides, never the `Content-Type` header.
"""

import asyncio
import hashlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic_core import PydanticCustomError

from app.config import Settings
from app.kit.public_urls import HostNotPublic, check_public_https_url, resolve_publicly

_SNIFF_BYTES = 12
GONE_STATUSES = frozenset({403, 404, 410})  # an expired signed URL is a 403 at most CDNs


class MediaCopyError(Exception):
    """Why a copy failed: `code` is what a failed job carries; `retryable` says whether a
    later attempt may succeed."""

    def __init__(self, code: str, detail: str, *, retryable: bool) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retryable = retryable


def unavailable(detail: str) -> MediaCopyError:
    return MediaCopyError("media_unavailable", detail, retryable=True)


def refused(code: str, detail: str) -> MediaCopyError:
    return MediaCopyError(code, detail, retryable=False)


class BackgroundSha256:
    """A sha256 computed in a thread of its own while the download goes on: hashlib releases
    the GIL on large buffers, so hashing overlaps the network instead of adding to it (a
    quarter of a copy's time when done inline, measured with bench.media_copy). Chunks go
    to the thread in batches of `BATCH_BYTES` (a hand-over per chunk cost more than the
    hashing), at most `MAX_PENDING` batches at a time, so memory stays bounded."""

    BATCH_BYTES = 1024 * 1024
    MAX_PENDING = 4

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sha256")  # keeps the order
        self._pending: deque[asyncio.Future[None]] = deque()
        self._batch: list[bytes] = []
        self._batch_bytes = 0

    def _digest(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._hash.update(chunk)

    def _hand_over(self) -> None:
        loop = asyncio.get_running_loop()
        self._pending.append(loop.run_in_executor(self._thread, self._digest, self._batch))
        self._batch, self._batch_bytes = [], 0

    async def update(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes >= self.BATCH_BYTES:
            self._hand_over()
            if len(self._pending) > self.MAX_PENDING:
                await self._pending.popleft()

    async def hexdigest(self) -> str:
        self._hand_over()
        await asyncio.gather(*self._pending)
        self._pending.clear()
        return self._hash.hexdigest()

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


@dataclass
class Downloaded:
    size: int = 0
    content_type: str | None = None
    sha256: str = ""
    _head: bytes = b""


def sniff(head: bytes) -> str | None:
    """The media type the first bytes announce: an MP4's `ftyp` box, WebM's EBML magic."""
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


async def check_source(url: str, settings: Settings) -> None:
    """Refuse a URL we must not fetch (see the module docstring)."""
    if _origin(url) in {_origin(o) for o in settings.media_trusted_origins}:
        return
    host = urlsplit(url).hostname or "?"
    try:
        check_public_https_url(url)
    except PydanticCustomError as exc:
        raise refused("media_unsafe_url", f"refused to fetch from {host}: {exc.message()}") from exc
    try:
        await resolve_publicly(host, 443)
    except OSError as exc:
        raise unavailable(f"cannot resolve {host}") from exc
    except HostNotPublic as exc:
        raise refused(
            "media_unsafe_url", f"refused to fetch from {host}: not a public address"
        ) from exc


def _check_response(response: httpx.Response, max_bytes: int) -> None:
    status = response.status_code
    if status in GONE_STATUSES:
        raise unavailable(f"the result URL answered {status} (expired or removed)")
    if not response.is_success:
        raise unavailable(f"the result URL answered {status}")
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise refused("media_too_large", f"the video is {announced} bytes; at most {max_bytes}")


async def _save(response: httpx.Response, path: Path, max_bytes: int) -> Downloaded:
    """Stream the body into `path`. Writes go to the page cache in pieces of what the socket
    delivered: a thread hop per piece would cost more than the write (measured with
    bench.media_copy), so they are made here, as a plain streamed download makes them."""
    result = Downloaded()
    digest = BackgroundSha256()
    try:
        with path.open("wb") as output:  # (not in a thread: see the docstring)
            async for chunk in response.aiter_bytes():
                result.size += len(chunk)
                if result.size > max_bytes:
                    raise refused("media_too_large", f"the video is over {max_bytes} bytes")
                if result.content_type is None:
                    result._head += chunk[:_SNIFF_BYTES]
                    if len(result._head) >= _SNIFF_BYTES:
                        result.content_type = sniff(result._head)
                        if result.content_type is None:
                            raise refused("media_invalid", "the result is not an MP4 or WebM")
                await digest.update(chunk)
                output.write(chunk)
        result.sha256 = await digest.hexdigest()
    finally:
        digest.close()
    if result.content_type is None:
        raise refused("media_invalid", "the result is too short to be a video")
    return result


async def download(http: httpx.AsyncClient, url: str, path: Path, settings: Settings) -> Downloaded:
    """Stream `url` into the file `path`, following at most MEDIA_MAX_REDIRECTS redirects,
    each checked before it is fetched. The caller removes the file, whatever happens."""
    for _hop in range(settings.media_max_redirects + 1):
        await check_source(url, settings)
        try:
            async with http.stream("GET", url) as response:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise unavailable("a redirect without a Location header")
                    url = urljoin(url, location)
                    continue
                _check_response(response, settings.media_max_bytes)
                return await _save(response, path, settings.media_max_bytes)
        except httpx.TransportError as exc:
            raise unavailable(f"the download broke off: {type(exc).__name__}") from exc
    raise refused("media_unsafe_url", f"more than {settings.media_max_redirects} redirects")
