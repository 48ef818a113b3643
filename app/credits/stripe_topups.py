"""Top-ups paid through Stripe Checkout.

The product creates a Checkout Session whose `metadata` names the user (`subject`) and
the credits bought (`credits`, a whole number). Stripe then POSTs
`checkout.session.completed` (and, for a payment method that settles later,
`checkout.session.async_payment_succeeded`) to `POST /billing/stripe/webhook`. The
official library verifies the signature (and its timestamp's age); a paid session tops
up the user once: the transfer's key is the session's id, so a replayed event, or both
events of one session, move the money once.
"""

import re
from dataclasses import dataclass
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import ledger
from app.db.models import CreditTransfer
from app.identity.verifier import is_subject
from app.kit.errors import ProblemError, invalid_field

PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
_CREDITS = re.compile(r"[1-9][0-9]{0,12}")


@dataclass(frozen=True, slots=True)
class TopUp:
    subject: str
    credits: int
    session_id: str
    event_id: str


def verified_event(payload: bytes, signature: str | None, secret: str) -> stripe.Event:
    """The event, if Stripe signed it with `secret` within the last five minutes: 400
    `invalid_signature` (nothing moves) otherwise."""
    try:
        event: stripe.Event = stripe.Webhook.construct_event(payload, signature or "", secret)
    except stripe.SignatureVerificationError as exc:
        raise ProblemError(
            400, "invalid_signature", "The Stripe-Signature header does not match this payload."
        ) from exc
    except ValueError as exc:  # signed, but not an event
        raise ProblemError(400, "invalid_payload", "The payload is not a Stripe event.") from exc
    return event


def top_up_of(event: stripe.Event) -> TopUp | None:
    """The top-up a paid checkout session carries; None for any other event (acknowledged,
    nothing moved). Metadata that names no user or no whole number of credits is a 422
    naming the field: Stripe shows it as failed and retries, and the payment is not lost."""
    if event.type not in PAID_EVENTS:
        return None
    session: dict[str, Any] = event.data.object.to_dict()
    if session.get("payment_status") != "paid":
        return None  # paid later: checkout.session.async_payment_succeeded follows
    metadata = session.get("metadata") or {}
    subject, credits = metadata.get("subject"), metadata.get("credits")
    if not is_subject(subject):
        raise _bad_metadata("subject", "names no user (one line, 1 to 255 characters)")
    if not isinstance(credits, str) or not _CREDITS.fullmatch(credits):
        raise _bad_metadata("credits", "is not a whole number of credits above 0")
    if int(credits) > ledger.MAX_AMOUNT:
        raise _bad_metadata("credits", f"is above {ledger.MAX_AMOUNT}")
    return TopUp(subject, int(credits), str(session["id"]), event.id)


def _bad_metadata(key: str, what: str) -> ProblemError:
    field = f"data.object.metadata.{key}"
    return invalid_field(
        field, "invalid_metadata", f"{key} {what}", f"The checkout session's {key} {what}."
    )


async def apply(session: AsyncSession, top_up: TopUp) -> tuple[CreditTransfer, bool]:
    """Credit the user, once per checkout session (commits). Returns (transfer, created)."""
    return await ledger.transfer_in(
        session,
        top_up.subject,
        ledger.TransferKind.TOPUP,
        top_up.credits,
        key=f"stripe:{top_up.session_id}",
        note=f"Stripe checkout {top_up.session_id} (event {top_up.event_id})",
    )
