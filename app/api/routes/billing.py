"""Payments that buy credits: Stripe's webhook (called by Stripe, not by clients)."""

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from app.api.deps import Session
from app.api.errors import problem_responses
from app.api.rate_limiting import per_client_ip
from app.api.state import services
from app.credits import stripe_topups
from app.credits.schemas import TransferOut
from app.kit.errors import ProblemError
from app.ratelimits.windows import RouteClass

router = APIRouter(tags=["billing"])


class StripeAck(BaseModel):
    received: bool = True
    transfer: TransferOut | None = Field(
        description="the top-up this event made (or made before: a replay moves nothing); "
        "null for an event that buys nothing"
    )


@router.post(
    "/billing/stripe/webhook",
    response_model=StripeAck,
    summary="Stripe's events: a paid checkout tops up credits (called by Stripe)",
    responses=problem_responses(400, 404, 413, 422, 429),
    dependencies=[per_client_ip(RouteClass.CALLBACK)],
)
async def stripe_webhook(
    request: Request,
    session: Session,
    stripe_signature: Annotated[str | None, Header(max_length=4096)] = None,
) -> StripeAck:
    """Verified with STRIPE_WEBHOOK_SECRET by the official library: a bad or stale
    signature is 400 and moves nothing. A paid `checkout.session.completed` (or
    `checkout.session.async_payment_succeeded`) whose metadata names `subject` and
    `credits` tops that user up, once per checkout session. 404 while no secret is set."""
    secret = services(request).settings.stripe_webhook_secret
    if secret is None:
        raise ProblemError(404, "not_found", "Stripe top-ups are not configured here.")
    body = await request.body()  # capped by RequestLimitsMiddleware
    event = stripe_topups.verified_event(body, stripe_signature, secret.get_secret_value())
    top_up = stripe_topups.top_up_of(event)
    if top_up is None:
        return StripeAck(transfer=None)
    transfer, _ = await stripe_topups.apply(session, top_up)
    return StripeAck(transfer=TransferOut.of(transfer))
