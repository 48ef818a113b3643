"""An endpoint's health from its deliveries: a first failure starts `failing_since`, a
success clears it, and an endpoint failing for OUTBOUND_DISABLE_AFTER_SECONDS without a
success is disabled, loudly (an operator re-enables it)."""

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Update, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.models import OutboundEndpoint
from app.ops.metrics import OUTBOUND_ENDPOINTS_DISABLED
from app.outbound.claims import SendOrder
from app.outbound.sender import Outcome
from app.outbound.states import AttemptResult

logger = logging.getLogger(__name__)
_ENDPOINTS = OutboundEndpoint.__table__


async def note_endpoint_outcome(
    engine: AsyncEngine, settings: Settings, order: SendOrder, outcome: Outcome, now: datetime
) -> None:
    """The endpoint's record after an attempt, written only when it changes."""
    endpoint = update(_ENDPOINTS).where(_ENDPOINTS.c.id == order.endpoint_id)
    if outcome.result is AttemptResult.DELIVERED:
        if order.failing_since is not None:
            await _execute(engine, endpoint.values(failing_since=None))
    elif order.failing_since is None:
        first_failure = _ENDPOINTS.c.failing_since.is_(None)
        await _execute(engine, endpoint.where(first_failure).values(failing_since=now))
    elif now - order.failing_since >= _disable_after(settings):
        await _disable_if_failing_too_long(engine, settings, order.endpoint_id, outcome, now)


async def _execute(engine: AsyncEngine, statement: Update) -> Any:
    """Run an endpoint update; its RETURNING value, if it has one."""
    async with engine.begin() as conn:
        result = await conn.execute(statement)
        return result.scalar() if result.returns_rows else None


def _disable_after(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.outbound_disable_after_seconds)


async def _disable_if_failing_too_long(
    engine: AsyncEngine, settings: Settings, endpoint_id: uuid.UUID, outcome: Outcome, now: datetime
) -> None:
    limit = _disable_after(settings)
    disabled = await _execute(
        engine,
        update(OutboundEndpoint)
        .where(
            OutboundEndpoint.id == endpoint_id,
            OutboundEndpoint.enabled,
            OutboundEndpoint.failing_since <= now - limit,
        )
        .values(
            enabled=False,
            disabled_at=now,
            disabled_reason=f"every attempt failed for {limit}; the last: {outcome.error}",
            updated_at=now,
        )
        .returning(OutboundEndpoint.url),
    )
    if disabled is not None:
        OUTBOUND_ENDPOINTS_DISABLED.inc()
        logger.error(
            "webhook endpoint %s (%s) disabled: failing for %s; re-enable it with PATCH "
            "/admin/webhook-endpoints/%s once it answers",
            endpoint_id,
            disabled,
            limit,
            endpoint_id,
        )
