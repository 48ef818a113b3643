"""What operators see of the messages and do with them: list an endpoint's deliveries
with every attempt, send one again, send a test event; the age of the oldest undelivered
message per endpoint (a metric)."""

import uuid
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import OutboundAttempt, OutboundMessage
from app.kit.cursor import newest_first_page
from app.kit.errors import ProblemError
from app.outbound.endpoints import get_endpoint
from app.outbound.fanout import Message, add_messages
from app.outbound.payloads import envelope, test_event_data
from app.outbound.schemas import AttemptOut, DeliveryOut, DeliveryPage
from app.outbound.states import TEST_EVENT, MessageStatus, webhook_id


def delivery_not_found() -> ProblemError:
    return ProblemError(404, "webhook_delivery_not_found", "No such delivery for this endpoint.")


def _endpoint_disabled() -> ProblemError:
    return ProblemError(
        409,
        "webhook_endpoint_disabled",
        "The endpoint is disabled: enable it first (PATCH with enabled: true).",
    )


async def _out(session: AsyncSession, messages: list[OutboundMessage]) -> list[DeliveryOut]:
    history: defaultdict[uuid.UUID, list[AttemptOut]] = defaultdict(list)
    if messages:
        attempts = await session.scalars(
            select(OutboundAttempt)
            .where(OutboundAttempt.message_id.in_([m.id for m in messages]))
            .order_by(OutboundAttempt.id)
        )
        for attempt in attempts:
            history[attempt.message_id].append(AttemptOut.model_validate(attempt))
    return [
        DeliveryOut(
            id=m.id,
            webhook_id=webhook_id(m.id),
            type=m.type,
            job_id=m.job_id,
            status=MessageStatus(m.status),
            attempts=m.attempts,
            next_attempt_at=m.next_attempt_at if m.status == MessageStatus.PENDING else None,
            last_status_code=m.last_status_code,
            last_error=m.last_error,
            created_at=m.created_at,
            delivered_at=m.delivered_at,
            history=history[m.id],
        )
        for m in messages
    ]


async def list_deliveries(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    *,
    status: MessageStatus | None,
    limit: int,
    cursor: str | None,
) -> DeliveryPage:
    """Newest first, keyset-paginated like the job lists."""
    await get_endpoint(session, endpoint_id)
    query = select(OutboundMessage).where(OutboundMessage.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(OutboundMessage.status == status)
    keys = (OutboundMessage.created_at, OutboundMessage.id)
    page, next_cursor = await newest_first_page(session, query, keys, limit=limit, cursor=cursor)
    return DeliveryPage(items=await _out(session, page), next_cursor=next_cursor)


async def _message(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, *, lock: bool = False
) -> OutboundMessage:
    message = await session.get(OutboundMessage, delivery_id, with_for_update=lock)
    if message is None or message.endpoint_id != endpoint_id:
        await get_endpoint(session, endpoint_id)  # a 404 for the endpoint comes first
        raise delivery_not_found()
    return message


async def get_delivery(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryOut:
    message = await _message(session, endpoint_id, delivery_id)
    return (await _out(session, [message]))[0]


async def retry_delivery(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryOut:
    """Send the message again now, whatever became of it (a receiver that lost it asks for
    it again with the same `webhook-id`). If this attempt fails too, it stays failed."""
    endpoint = await get_endpoint(session, endpoint_id)
    if not endpoint.enabled:
        raise _endpoint_disabled()
    message = await _message(session, endpoint_id, delivery_id, lock=True)
    message.status = MessageStatus.PENDING
    message.next_attempt_at = datetime.now(UTC)
    out = (await _out(session, [message]))[0]
    await session.commit()
    return out


async def send_test_event(session: AsyncSession, endpoint_id: uuid.UUID) -> DeliveryOut:
    endpoint = await get_endpoint(session, endpoint_id)
    if not endpoint.enabled:
        raise _endpoint_disabled()
    payload = envelope(TEST_EVENT, datetime.now(UTC), test_event_data(endpoint_id))
    message = Message(TEST_EVENT, f"{TEST_EVENT}:{uuid.uuid4()}", None, None, payload)
    (message_id,) = await add_messages(session, [endpoint_id], [message])
    await session.commit()
    return await get_delivery(session, endpoint_id, message_id)


async def oldest_pending_ages(session: AsyncSession) -> dict[uuid.UUID, float]:
    """Seconds since the oldest undelivered message of each endpoint was written."""
    rows = await session.execute(
        select(OutboundMessage.endpoint_id, func.min(OutboundMessage.created_at))
        .where(OutboundMessage.status == MessageStatus.PENDING)
        .group_by(OutboundMessage.endpoint_id)
    )
    now = datetime.now(UTC)
    return {endpoint_id: (now - oldest).total_seconds() for endpoint_id, oldest in rows}
