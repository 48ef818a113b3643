"""Where videos, posters and uploads live: one small interface over obstore, which speaks
to a local folder and to any S3-compatible bucket with one async API (multipart uploads,
presigned URLs), so no S3 signing or upload logic is ours. The key shapes belong to the
domains (`app/media/keys.py`, `app/uploads/keys.py`).
"""

import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.store import LocalStore, S3Store

from app.config import MediaBackend, Settings
from app.storage.signed_urls import local_media_url

if TYPE_CHECKING:  # a TypedDict of obstore's stubs, not importable at run time
    from obstore.store import S3Config

# the Content-Type each stored object is served with, by its key's extension
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "jpg": "image/jpeg",
    "png": "image/png",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
}
# bounded memory for uploads: parts of 8 MiB, two in flight
_PART_BYTES = 8 * 1024 * 1024
_PARTS_IN_FLIGHT = 2


def content_type_of(key: str) -> str:
    return CONTENT_TYPES[key.rsplit(".", 1)[-1]]


def _s3_store(settings: Settings, endpoint: str | None) -> S3Store:
    config: S3Config = {"region": settings.media_s3_region}
    if settings.media_s3_access_key_id and settings.media_s3_secret_access_key:
        config["access_key_id"] = settings.media_s3_access_key_id.get_secret_value()
        config["secret_access_key"] = settings.media_s3_secret_access_key.get_secret_value()
    if endpoint is not None:
        config["endpoint"] = endpoint
        config["virtual_hosted_style_request"] = False
    assert settings.media_s3_bucket is not None  # enforced by Settings
    return S3Store(settings.media_s3_bucket, config=config, client_options={"allow_http": True})


STAGING = ".staging"  # beside the stored objects, never served (not a key `/media` accepts)


class ObjectStore:
    """Put, delete and hand out short-lived GET URLs for stored objects.

    Downloads are staged as files in `staging_root`: on the local backend a folder inside
    MEDIA_ROOT, on the same filesystem, so storing a staged video is a rename, not a copy;
    on S3 a private temporary folder, uploaded from."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.local_root: Path | None = None
        if settings.media_backend is MediaBackend.LOCAL:
            self.local_root = Path(settings.media_root).resolve()
            self._store: LocalStore | S3Store = LocalStore(self.local_root, mkdir=True)
            self._signer: S3Store | None = None
            self._input_signer: S3Store | None = None
            self.staging_root = self.local_root / STAGING
            self.staging_root.mkdir(exist_ok=True)
        else:
            self._store = _s3_store(settings, settings.media_s3_endpoint)
            public = settings.media_s3_public_endpoint
            self._signer = _s3_store(settings, public) if public else self._store
            upstream = settings.media_s3_input_endpoint
            self._input_signer = _s3_store(settings, upstream) if upstream else self._signer
            self.staging_root = Path(tempfile.mkdtemp(prefix="seedance-bff-media-"))

    async def store_staged(self, name: str, key: str, content_type: str) -> None:
        """Make the staged file `name` the object `key` (the staged file is gone after)."""
        if self.local_root is not None:
            await obstore.rename_async(self._store, f"{STAGING}/{name}", key)
        else:
            await self.put_file(key, self.staging_root / name, content_type)

    def clean_staging(self, older_than_seconds: float) -> None:
        """Remove staged files left by copies that cannot be running any more (a process
        killed mid-copy): copies end within their lease."""
        cutoff = time.time() - older_than_seconds
        for path in self.staging_root.iterdir():
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.local_root is None:
            shutil.rmtree(self.staging_root, ignore_errors=True)

    def _attributes(self, content_type: str) -> dict[str, str] | None:
        """The object's Content-Type, for S3 (a local file's comes from its extension)."""
        return None if self.local_root else {"Content-Type": content_type}

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Upload a local file in bounded memory (multipart above one part)."""
        await obstore.put_async(
            self._store,
            key,
            path,
            attributes=self._attributes(content_type),
            chunk_size=_PART_BYTES,
            max_concurrency=_PARTS_IN_FLIGHT,
        )

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        attributes = self._attributes(content_type)
        await obstore.put_async(self._store, key, data, attributes=attributes)

    async def delete(self, key: str) -> bool:
        """Remove an object; False when there was none (deleting is idempotent)."""
        if not await self.exists(key):
            return False
        try:
            await obstore.delete_async(self._store, key)
        except FileNotFoundError:
            return False
        return True

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return False
        return True

    def signed_url(self, key: str, scope: str | None = None) -> str:
        """A GET URL valid for MEDIA_URL_TTL_SECONDS: presigned by the bucket's rules on S3,
        signed by us (and served by `/media/...`, `scope` included) on the local backend."""
        ttl = self._settings.media_url_ttl_seconds
        if self._signer is None:
            return local_media_url(self._settings, key, ttl, scope)
        return obstore.sign(self._signer, "GET", key, timedelta(seconds=ttl))

    def input_url(self, key: str, ttl_seconds: int) -> str:
        """A GET URL for Seedance, valid for `ttl_seconds`: on S3 presigned for
        MEDIA_S3_INPUT_ENDPOINT when set (else as `signed_url`)."""
        if self._input_signer is None:
            return local_media_url(self._settings, key, ttl_seconds)
        return obstore.sign(self._input_signer, "GET", key, timedelta(seconds=ttl_seconds))

    def local_path(self, key: str) -> Path:
        """The file behind a key of the local backend (keys are checked before this)."""
        assert self.local_root is not None
        return self.local_root / key
