"""Erasure's part in moderation (a `Forgetter`): the decisions, strikes, cases and
suspension stay as evidence under the erasure's pseudonym; every word the user or others
wrote about their jobs (upstream's refusal text, appeal statements, report comments,
admins' notes) goes, and the reports the user filed no longer name them."""

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ModerationCase, ModerationEvent, ModerationReport, Suspension


async def forget_moderation(session: AsyncSession, subject: str, pseudonym: str) -> None:
    events = ModerationEvent
    await session.execute(
        update(events).where(events.subject == subject).values(subject=pseudonym, note=None)
    )
    await session.execute(update(events).where(events.actor == subject).values(actor=pseudonym))
    await session.execute(
        update(ModerationCase).where(ModerationCase.subject == subject).values(subject=pseudonym)
    )
    cases_of_theirs = select(ModerationCase.job_id).where(ModerationCase.subject == pseudonym)
    await session.execute(
        update(ModerationReport)
        .where(ModerationReport.job_id.in_(cases_of_theirs))
        .values(comment=None)
    )
    await session.execute(
        update(ModerationReport)
        .where(ModerationReport.reporter == subject)
        .values(reporter=pseudonym, comment=None)
    )
    await session.execute(
        update(Suspension).where(Suspension.subject == subject).values(subject=pseudonym)
    )
