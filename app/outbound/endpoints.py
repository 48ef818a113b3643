"""Admins manage the endpoints: create (the secret is shown once), read, change, delete,
rotate the secret with a grace period."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.models import OutboundEndpoint
from app.kit.errors import ProblemError
from app.outbound.schemas import EndpointCreate, EndpointUpdate, RotateSecret
from app.outbound.signing import SecretBox, new_secret
from app.outbound.urls import check_endpoint_url


def endpoint_not_found() -> ProblemError:
    return ProblemError(404, "webhook_endpoint_not_found", "No such webhook endpoint.")


async def get_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool = False
) -> OutboundEndpoint:
    endpoint = await session.get(OutboundEndpoint, endpoint_id, with_for_update=lock)
    if endpoint is None:
        raise endpoint_not_found()
    return endpoint


async def list_endpoints(session: AsyncSession) -> list[OutboundEndpoint]:
    return list(
        await session.scalars(select(OutboundEndpoint).order_by(OutboundEndpoint.created_at))
    )


async def create_endpoint(
    session: AsyncSession, settings: Settings, box: SecretBox, body: EndpointCreate
) -> tuple[OutboundEndpoint, str]:
    """The new endpoint and its secret in clear (the only time it is)."""
    secret = new_secret()
    endpoint = OutboundEndpoint(
        url=check_endpoint_url(body.url, settings),
        events=sorted(set(body.events)),
        description=body.description,
        include_prompts=body.include_prompts,
        enabled=True,
        secret=box.seal(secret),
    )
    session.add(endpoint)
    await session.commit()
    return endpoint, secret


def _enable(endpoint: OutboundEndpoint, enabled: bool) -> None:
    endpoint.enabled = enabled
    if enabled:  # a fresh start: the failure record was what disabled it
        endpoint.failing_since = None
        endpoint.disabled_at = None
        endpoint.disabled_reason = None


async def update_endpoint(
    session: AsyncSession, settings: Settings, endpoint_id: uuid.UUID, body: EndpointUpdate
) -> OutboundEndpoint:
    endpoint = await get_endpoint(session, endpoint_id, lock=True)
    if body.url is not None:
        endpoint.url = check_endpoint_url(body.url, settings)
    if body.events is not None:
        endpoint.events = sorted(set(body.events))
    if "description" in body.model_fields_set:
        endpoint.description = body.description
    if body.include_prompts is not None:
        endpoint.include_prompts = body.include_prompts
    if body.enabled is not None:
        _enable(endpoint, body.enabled)
    endpoint.updated_at = datetime.now(UTC)
    await session.commit()
    return endpoint


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    """The endpoint and its messages go (nothing is left to send to it)."""
    endpoint = await get_endpoint(session, endpoint_id, lock=True)
    await session.delete(endpoint)
    await session.commit()


async def rotate_secret(
    session: AsyncSession,
    settings: Settings,
    box: SecretBox,
    endpoint_id: uuid.UUID,
    body: RotateSecret,
) -> tuple[OutboundEndpoint, str]:
    """A new secret signs from now on; the current one keeps signing alongside it for the
    grace period, so receivers can switch without missing a delivery."""
    endpoint = await get_endpoint(session, endpoint_id, lock=True)
    grace = body.grace_seconds
    if grace is None:
        grace = settings.outbound_rotation_grace_seconds
    secret = new_secret()
    now = datetime.now(UTC)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + timedelta(seconds=grace)
    endpoint.secret = box.seal(secret)
    endpoint.updated_at = now
    await session.commit()
    return endpoint, secret


def signing_secrets(
    endpoint: OutboundEndpoint | Row[Any], box: SecretBox, now: datetime
) -> list[str]:
    """The secrets that sign a message sent now: the current one, and the previous one
    while its grace period lasts."""
    sealed = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret is not None and expires is not None and now < expires:
        sealed.append(endpoint.previous_secret)
    return [box.open(s) for s in sealed]
