"""Per-job callback URLs that carry their own proof.

Seedance documents no signature scheme, so the URL we give it embeds an HMAC of the job
id under CALLBACK_SECRET. Only we can mint it; the callback route checks it in constant
time.
"""

import hashlib
import hmac
import uuid

from app.config import Settings

CALLBACK_PATH = "/webhooks/seedance/{job_id}"


def callback_signature(settings: Settings, job_id: uuid.UUID) -> str:
    key = settings.callback_secret.get_secret_value().encode()
    return hmac.new(key, f"seedance-callback:{job_id}".encode(), hashlib.sha256).hexdigest()


def callback_url(settings: Settings, job_id: uuid.UUID) -> str:
    path = CALLBACK_PATH.format(job_id=job_id)
    return (
        f"{settings.public_base_url.rstrip('/')}{path}?sig={callback_signature(settings, job_id)}"
    )


def signature_is_valid(settings: Settings, job_id: uuid.UUID, signature: str) -> bool:
    """Constant-time check; compared as bytes, since a forged query string may hold any
    character (compare_digest refuses non-ASCII str)."""
    presented = signature.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(callback_signature(settings, job_id).encode(), presented)
