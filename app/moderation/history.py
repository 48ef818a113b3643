"""The append-only moderation history (`moderation_events`): every decision, report,
appeal, strike and suspension, with who, when and why. Never a prompt's text."""

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ModerationEvent, OutboundEvent


class EventKind(StrEnum):
    DECIDED = "decided"  # by a provider or by Seedance
    UNCHECKED = "unchecked"  # accepted while the provider could not answer
    REPORTED = "reported"
    APPEALED = "appealed"
    RELEASED = "released"
    TAKEN_DOWN = "taken_down"
    DISMISSED = "dismissed"
    ESCALATED = "escalated"
    SUSPENDED = "suspended"
    LIFTED = "lifted"


class ModerationNotice(StrEnum):
    """The outbound webhook events moderation writes to the outbox (with the job's move)."""

    HELD = "job.moderation_held"
    RELEASED = "job.moderation_released"
    TAKEN_DOWN = "job.taken_down"
    SUSPENDED = "user.suspended"  # about a user, not a job


def notify(
    session: AsyncSession,
    notice: ModerationNotice,
    job_id: uuid.UUID | None = None,
    subject: str | None = None,
) -> None:
    """Tell the product's servers, in the transaction of the decision (the outbox)."""
    session.add(
        OutboundEvent(type=notice.value, job_id=job_id, subject=subject, at=datetime.now(UTC))
    )


class Source(StrEnum):
    """Who acted, beside the providers (whose names are sources too)."""

    UPSTREAM = "upstream"
    ADMIN = "admin"
    USER = "user"
    STRIKES = "strikes"


def record(
    session: AsyncSession,
    subject: str,
    kind: EventKind,
    source: str,
    *,
    job_id: uuid.UUID | None = None,
    stage: str | None = None,
    verdict: str | None = None,
    categories: Mapping[str, float] | None = None,
    reason: str | None = None,
    actor: str | None = None,
    note: str | None = None,
    strike: bool = False,
) -> ModerationEvent:
    event = ModerationEvent(
        job_id=job_id,
        subject=subject,
        kind=kind,
        stage=stage,
        source=source,
        verdict=verdict,
        categories=dict(categories or {}),
        reason=reason,
        actor=actor,
        note=note,
        strike=strike,
        at=datetime.now(UTC),
    )
    session.add(event)
    return event
