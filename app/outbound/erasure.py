"""The outbound part of a user's erasure (`app/jobs/service.py` runs it): the webhook
messages about their jobs and batches (and about them: `user.suspended`) go, with their
attempts, whose stored answers may
echo a prompt (receivers often echo what they get). Pending ones are never sent."""

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Batch, Job, OutboundEvent, OutboundMessage
from app.outbound.fanout import user_event_key


async def forget_messages(session: AsyncSession, subject: str, pseudonym: str) -> None:
    jobs = select(Job.id).where(Job.owner == pseudonym)
    batches = select(Batch.id).where(Batch.owner == pseudonym)
    about_them = OutboundMessage.dedupe_key.startswith(user_event_key(subject), autoescape=True)
    await session.execute(
        delete(OutboundMessage).where(
            or_(
                OutboundMessage.job_id.in_(jobs),
                OutboundMessage.batch_id.in_(batches),
                about_them,
            )
        )
    )
    await session.execute(delete(OutboundEvent).where(OutboundEvent.subject == subject))
