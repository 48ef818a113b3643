"""Short-lived URLs for the local media backend, signed by the service.

A `<video src>` cannot send an `Authorization` header, so the URL itself is the proof:
an HMAC-SHA256 under MEDIA_URL_SECRET of the object key and the expiry time. Anyone
holding the URL can play the object until it expires, as with S3's presigned URLs.

A URL made for moderators (`scope=review`, signed with the scope) plays a video that
moderation withholds from everyone else.
"""

import hashlib
import hmac
import time
from urllib.parse import urlencode

from app.config import Settings

MEDIA_PATH = "/media/"


REVIEW_SCOPE = "review"


def _signature(settings: Settings, key: str, expires: int, scope: str | None) -> str:
    secret = settings.media_url_secret.get_secret_value().encode()
    signed = f"media:{key}:{expires}" + (f":{scope}" if scope else "")
    return hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()


def local_media_url(
    settings: Settings, key: str, ttl_seconds: int, scope: str | None = None
) -> str:
    expires = int(time.time()) + ttl_seconds
    signature = _signature(settings, key, expires, scope)
    query = urlencode(
        {"expires": expires, "signature": signature} | ({"scope": scope} if scope else {})
    )
    return f"{settings.public_base_url.rstrip('/')}{MEDIA_PATH}{key}?{query}"


def check_signature(
    settings: Settings, key: str, expires: int, signature: str, scope: str | None = None
) -> str | None:
    """None when the URL is valid now; else why not (`invalid_signature`, `url_expired`)."""
    expected = _signature(settings, key, expires, scope).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
        return "invalid_signature"
    if time.time() > expires:
        return "url_expired"
    return None
