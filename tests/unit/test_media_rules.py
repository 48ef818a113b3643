"""The media rules that need no I/O: what a file's first bytes say it is, what counts as a
mismatch with the request, the local backend's signed URLs, which hosts a result may come
from, and the settings that must hold in production."""

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from app.api.routes.media import servable
from app.config import Settings
from app.media.download import MediaCopyError, check_source, sniff
from app.media.probe import VideoFacts, mismatches
from app.storage.signed_urls import check_signature, local_media_url

SETTINGS = Settings(_env_file=None, public_base_url="https://bff.example.com")  # type: ignore[call-arg]
KEY = "videos/0b6f1c1e-7a8d-4a43-9c5e-2f1f3f8e9a10.mp4"


def facts(width: int, height: int, duration: float | None) -> VideoFacts:
    return VideoFacts(width, height, duration, 24.0, "h264", True, b"", [])


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "video/mp4"),
        (b"\x00\x00\x00\x1cftypmp42\x00\x00\x00\x00", "video/mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81", "video/webm"),
        (b"<html><body>Access denied", None),
        (b"GIF89a\x01\x00\x01\x00\x00\x00", None),
        (b"\x00\x00\x00\x20moov\x00\x00\x00\x00", None),  # a box, but not a file's first
    ],
)
def test_the_first_bytes_decide_the_type(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_mismatches_name_what_differs_from_the_request() -> None:
    assert (
        mismatches(facts(1280, 720, 8.0), resolution="720p", aspect_ratio="16:9", duration=8)
        is None
    )
    assert (
        mismatches(facts(720, 1280, 8.4), resolution="720p", aspect_ratio="9:16", duration=8)
        is None
    )
    assert mismatches(facts(854, 480, 8.0), resolution="720p", aspect_ratio="16:9", duration=8) == (
        "resolution: asked 720p, got 854x480"
    )
    assert mismatches(facts(720, 720, 5.0), resolution="720p", aspect_ratio="16:9", duration=8) == (
        "aspect ratio: asked 16:9, got 720x720; duration: asked 8s, got 5.0s"
    )
    # adaptive has no ratio to hold to, and a length unknown to the container is not a mismatch
    assert (
        mismatches(facts(960, 720, None), resolution="720p", aspect_ratio="adaptive", duration=8)
        is None
    )


def test_local_media_urls_are_signed_and_expire() -> None:
    url = local_media_url(SETTINGS, KEY, 60)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"https://bff.example.com/media/{KEY}"
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    expires, signature = int(query["expires"]), query["signature"]
    assert check_signature(SETTINGS, KEY, expires, signature) is None
    assert check_signature(SETTINGS, KEY, expires + 1, signature) == "invalid_signature"
    other_key = KEY.replace("0b6f", "1b6f")
    assert check_signature(SETTINGS, other_key, expires, signature) == "invalid_signature"
    other_secret = Settings(_env_file=None, media_url_secret="x" * 40)  # type: ignore[call-arg]
    assert check_signature(other_secret, KEY, expires, signature) == "invalid_signature"
    assert check_signature(SETTINGS, KEY, expires, "é" * 64) == "invalid_signature"
    past = local_media_url(SETTINGS, KEY, -1)
    query = {name: values[0] for name, values in parse_qs(urlsplit(past).query).items()}
    assert int(query["expires"]) < time.time()
    assert (
        check_signature(SETTINGS, KEY, int(query["expires"]), query["signature"]) == "url_expired"
    )


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "videos/../../x.mp4", ".staging/abc", "videos/x.mp4", "posters/a.png", ""],
)
def test_only_keys_of_media_objects_are_served(key: str) -> None:
    assert not servable(key)


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.com/v.mp4",  # not https
        "https://127.0.0.1/v.mp4",
        "https://10.1.2.3/v.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/v.mp4",
        "https://localhost/v.mp4",
        "https://metadata.google.internal/v.mp4",
        "https://user:pw@cdn.example.com/v.mp4",
    ],
)
async def test_results_from_private_or_plain_http_hosts_are_refused(url: str) -> None:
    with pytest.raises(MediaCopyError) as refused:
        await check_source(url, SETTINGS)
    assert (refused.value.code, refused.value.retryable) == ("media_unsafe_url", False)


async def test_trusted_origins_are_exact() -> None:
    trusting = Settings(_env_file=None, media_trusted_origins="http://127.0.0.1:8100")  # type: ignore[call-arg]
    await check_source("http://127.0.0.1:8100/files/t.mp4", trusting)
    for other in ("http://127.0.0.1:8101/files/t.mp4", "https://127.0.0.1:8100/files/t.mp4"):
        with pytest.raises(MediaCopyError):
            await check_source(other, trusting)


def test_production_needs_its_own_media_secret_with_the_local_backend() -> None:
    production = {"environment": "production", "jwt_secret": "j" * 40, "callback_secret": "w" * 40}
    production["seedance_api_key"] = "live-key"
    production["outbound_secrets_key"] = "o" * 40
    with pytest.raises(ValueError, match="MEDIA_URL_SECRET"):
        Settings(_env_file=None, **production)  # type: ignore[arg-type]
    Settings(_env_file=None, media_url_secret="m" * 40, **production)  # type: ignore[arg-type]
    Settings(_env_file=None, media_backend="s3", media_s3_bucket="b", **production)  # type: ignore[arg-type]
