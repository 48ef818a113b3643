"""Stripe's webhook events as Stripe signs them (its `Stripe-Signature` scheme), for the
tests of top-ups."""

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from testkit.harness import Stack

STRIPE_SECRET = "whsec_" + "s" * 32


def stripe_event(
    session_id: str,
    metadata: dict[str, Any],
    *,
    event_type: str = "checkout.session.completed",
    payment_status: str = "paid",
) -> bytes:
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "payment_status": payment_status,
                "metadata": metadata,
            }
        },
    }
    return json.dumps(event).encode()


def stripe_signature(payload: bytes, secret: str = STRIPE_SECRET, at: int | None = None) -> str:
    """Stripe's scheme: `t=<unix time>,v1=<HMAC-SHA256 of "<t>.<payload>" by the secret>`."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


async def send_stripe(stack: Stack, payload: bytes, signature: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    headers["Stripe-Signature"] = signature or stripe_signature(payload)
    return await stack.http.post("/billing/stripe/webhook", content=payload, headers=headers)
