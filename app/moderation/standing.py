"""Strikes and suspension: MODERATION_STRIKES_TO_SUSPEND blocks within
MODERATION_STRIKE_WINDOW_HOURS suspend a user (no creates, batches, promotes or
uploads: 403 `account_suspended`) until an admin lifts it, which forgives the strikes
behind it, or until its `until`.

A strike is a `moderation_events` row with `strike` set: our own blocks (written here)
and Seedance's refusals (written by the jobs domain with the failed move). The count is
taken when a strike is recorded and, for Seedance's, when the user next creates.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.models import ModerationEvent, Suspension
from app.db.session import lock_or_insert
from app.kit.errors import ProblemError
from app.moderation.history import EventKind, ModerationNotice, Source, notify, record


@dataclass(frozen=True, slots=True)
class Standing:
    suspended: bool
    reason: str | None
    since: datetime | None
    until: datetime | None
    strikes: int  # within the window, not forgiven
    strikes_to_suspend: int


def _in_force(suspension: Suspension | None, now: datetime) -> bool:
    return suspension is not None and (suspension.until is None or suspension.until > now)


async def strikes(
    session: AsyncSession,
    settings: Settings,
    subject: str,
    now: datetime,
    suspension: Suspension | None,
) -> int:
    """Strikes within the window that no suspension has answered yet (a suspension that
    ran out does not come back for the strikes that made it)."""
    since = now - timedelta(hours=settings.moderation_strike_window_hours)
    if suspension is not None and not _in_force(suspension, now):
        since = max(since, suspension.since)
    count = await session.scalar(
        select(func.count()).where(
            ModerationEvent.subject == subject,
            ModerationEvent.strike.is_(True),
            ModerationEvent.forgiven_at.is_(None),
            ModerationEvent.at >= since,
        )
    )
    return count or 0


async def enforce_strikes(session: AsyncSession, settings: Settings, subject: str) -> bool:
    """Suspend `subject` if their strikes reached the limit (in the caller's transaction);
    whether they are suspended now."""
    now = datetime.now(UTC)
    suspension = await session.get(Suspension, subject, populate_existing=True)
    if _in_force(suspension, now):
        return True
    count = await strikes(session, settings, subject, now, suspension)
    if count < settings.moderation_strikes_to_suspend:
        return False
    reason = f"{count} moderation strikes within {settings.moderation_strike_window_hours:g} hours"
    await suspend(session, subject, reason, None, Source.STRIKES, renew=False)
    return True


async def check_not_suspended(session: AsyncSession, settings: Settings, subject: str) -> None:
    """403 `account_suspended` for a suspended user (also one whose Seedance refusals
    reached the limit since they last created: suspended now)."""
    suspended = await enforce_strikes(session, settings, subject)
    await session.commit()
    if suspended:
        raise ProblemError(
            403,
            "account_suspended",
            "This account is suspended for breaking the content policy; it cannot create "
            "videos or upload files. Contact support to appeal.",
        )


async def suspend(
    session: AsyncSession,
    subject: str,
    reason: str,
    until: datetime | None,
    by: str,
    *,
    renew: bool = True,
) -> Suspension:
    """Suspend `subject`, or renew the suspension they have (an admin's new terms). With
    `renew` off, a suspension in force is left as it is: two requests that count the
    same strikes at once suspend once (each inserting the row failed one of them)."""
    now = datetime.now(UTC)
    suspension, created = await lock_or_insert(
        session, Suspension, subject, reason=reason, since=now, until=until, by=by
    )
    if suspension is None:  # lifted between the two statements
        return await suspend(session, subject, reason, until, by, renew=renew)
    if not created:
        if not renew and _in_force(suspension, now):
            return suspension
        suspension.reason, suspension.until, suspension.by = reason, until, by
        suspension.since = now
    record(session, subject, EventKind.SUSPENDED, by, reason=reason[:64], note=reason)
    notify(session, ModerationNotice.SUSPENDED, subject=subject)
    return suspension


async def lift(session: AsyncSession, subject: str, actor: str) -> bool:
    """Lift a suspension and forgive the strikes behind it; False when there was none."""
    suspension = await session.get(Suspension, subject, with_for_update=True)
    if suspension is None:
        return False
    await session.delete(suspension)
    await forgive(session, ModerationEvent.subject == subject)
    record(session, subject, EventKind.LIFTED, Source.ADMIN, actor=actor)
    return True


async def forgive(session: AsyncSession, which: ColumnElement[bool]) -> None:
    """The strikes `which` picks no longer count (a lifted suspension, an overturned
    refusal)."""
    await session.execute(
        update(ModerationEvent)
        .where(which, ModerationEvent.strike.is_(True), ModerationEvent.forgiven_at.is_(None))
        .values(forgiven_at=datetime.now(UTC))
    )


async def standing(session: AsyncSession, settings: Settings, subject: str) -> Standing:
    now = datetime.now(UTC)
    suspension = await session.get(Suspension, subject, populate_existing=True)
    count = await strikes(session, settings, subject, now, suspension)
    active = suspension if _in_force(suspension, now) else None
    return Standing(
        suspended=active is not None,
        reason=active.reason if active else None,
        since=active.since if active else None,
        until=active.until if active else None,
        strikes=count,
        strikes_to_suspend=settings.moderation_strikes_to_suspend,
    )
