"""The outbound part of the retention sweep (`app/jobs/retention.py` runs it): delivered or
given-up messages older than the cutoff go, with their attempts; a pending one never."""

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import OutboundMessage
from app.outbound.states import MessageStatus

_FINISHED = (MessageStatus.DELIVERED, MessageStatus.FAILED)


async def prune_finished_messages(
    sessionmaker: async_sessionmaker[AsyncSession], cutoff: datetime, batch: int
) -> int:
    """One batch, in a transaction of its own; how many messages went."""
    async with sessionmaker() as session, session.begin():
        oldest = (
            select(OutboundMessage.id)
            .where(OutboundMessage.created_at < cutoff, OutboundMessage.status.in_(_FINISHED))
            .order_by(OutboundMessage.created_at)
            .limit(batch)
        )
        result = await session.execute(
            delete(OutboundMessage).where(OutboundMessage.id.in_(oldest))
        )
    # a DELETE's result is a CursorResult, which Session.execute's type does not say
    return result.rowcount  # type: ignore[attr-defined, no-any-return]
