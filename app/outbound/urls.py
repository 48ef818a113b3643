"""Where webhooks may go: public https hosts, by the rules of the URLs users give us, checked
when an endpoint is saved and again before every attempt (DNS answers change). Outside
production, http(s) to this machine's loopback is allowed too, for local receivers."""

import re
from urllib.parse import urlsplit

from pydantic_core import PydanticCustomError

from app.config import Settings
from app.kit.errors import invalid_field
from app.kit.public_urls import (
    MAX_URL_LENGTH,
    URL_TAIL_PATTERN,
    HostNotPublic,
    check_public_https_url,
    resolve_publicly,
)

LOCAL_RECEIVER_URL_PATTERN = rf"^https?://(?:127\.0\.0\.1|localhost|\[::1\]){URL_TAIL_PATTERN}$"
_LOCAL_RECEIVER = re.compile(LOCAL_RECEIVER_URL_PATTERN)


class UnsafeUrl(Exception):
    """The endpoint's URL may not be called (any more)."""


def _is_local_receiver(url: str, settings: Settings) -> bool:
    return (
        not settings.is_production
        and len(url) <= MAX_URL_LENGTH
        and _LOCAL_RECEIVER.fullmatch(url) is not None
    )


def check_endpoint_url(url: str, settings: Settings) -> str:
    """The URL an admin gives, or a 422 problem naming the rule it breaks."""
    if _is_local_receiver(url, settings):
        return url
    try:
        return check_public_https_url(url)
    except PydanticCustomError as exc:
        raise invalid_field(
            "url", exc.type, exc.message(), f"The endpoint URL is refused: {exc.message()}."
        ) from exc


async def check_before_send(url: str, settings: Settings) -> None:
    """Raise UnsafeUrl unless `url` may be called now: its rules, and its host resolving
    only to public addresses (a name re-pointed at 10.0.0.1 since it was saved is caught)."""
    if _is_local_receiver(url, settings):
        return
    try:
        check_public_https_url(url)
        parts = urlsplit(url)
        await resolve_publicly(parts.hostname or "", parts.port or 443)
    except (PydanticCustomError, HostNotPublic) as exc:
        raise UnsafeUrl(str(exc)) from exc
