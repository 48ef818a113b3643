"""The outbox, fanned out: each event becomes one message per enabled endpoint that
subscribes to its type, payload frozen now, in one transaction that also removes the
event (claimed with SKIP LOCKED, so replicas share the work and none repeats it).

A deletion also removes the job's prompt from the messages already written about it.
`batch.completed` is found here: when a job of a batch ends, the batch is complete if no
variant is left unfinished. Two variants ending at once may both find it complete; the
message's dedupe key keeps one per endpoint.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits.ledger import TransferKind
from app.db.models import (
    Batch,
    CreditTransfer,
    Job,
    OutboundAttempt,
    OutboundEndpoint,
    OutboundEvent,
    OutboundMessage,
    Suspension,
)
from app.db.session import upsert_insert
from app.jobs.service import batch_jobs
from app.jobs.states import TERMINAL, CreditState
from app.media.links import MediaLinks
from app.outbound.payloads import batch_data, envelope, job_data, job_out, without_user_text
from app.outbound.states import EventType, MessageStatus

BATCH = 200  # outbox rows per transaction


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    dedupe_key: str
    job_id: uuid.UUID | None
    batch_id: uuid.UUID | None
    payload: str  # the same for every endpoint of the same prompt choice


async def add_messages(
    session: AsyncSession, endpoint_ids: list[uuid.UUID], messages: list[Message]
) -> list[uuid.UUID]:
    """Insert messages, due now, skipping any already written (same endpoint and key);
    returns the ids of those inserted."""
    now = datetime.now(UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "endpoint_id": endpoint_id,
            "type": message.type,
            "dedupe_key": message.dedupe_key,
            "job_id": message.job_id,
            "batch_id": message.batch_id,
            "payload": message.payload,
            "status": MessageStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for endpoint_id, message in zip(endpoint_ids, messages, strict=True)
    ]
    if not rows:
        return []
    statement = (
        upsert_insert(session, OutboundMessage)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["endpoint_id", "dedupe_key"])
        .returning(OutboundMessage.id)
    )
    return list(await session.scalars(statement))


class Fanout:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], links: MediaLinks) -> None:
        self._sessionmaker = sessionmaker
        self._links = links

    async def run(self) -> int:
        """Fan out up to BATCH outbox events; returns how many were taken."""
        async with self._sessionmaker() as session, session.begin():
            events = list(
                await session.scalars(
                    select(OutboundEvent)
                    .order_by(OutboundEvent.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            if not events:
                return 0
            endpoints = list(
                await session.scalars(select(OutboundEndpoint).where(OutboundEndpoint.enabled))
            )
            # shared locks: an erasure changing these jobs waits for the messages written
            # about them here, and then removes them (never a message naming the user after)
            jobs = {
                job.id: job
                for job in await session.scalars(
                    select(Job)
                    .where(Job.id.in_({e.job_id for e in events if e.job_id}))
                    .with_for_update(read=True)
                )
            }
            targets: list[uuid.UUID] = []
            messages: list[Message] = []
            for event in events:
                if event.subject is not None:
                    for endpoint, message in await _about_user(session, endpoints, event):
                        targets.append(endpoint)
                        messages.append(message)
                    continue
                if event.job_id is None:
                    for endpoint, message in _about_account(endpoints, event):
                        targets.append(endpoint)
                        messages.append(message)
                    continue
                job = jobs.get(event.job_id) if event.job_id else None
                if job is None:
                    continue
                for endpoint, message in await self._messages(session, endpoints, event, job):
                    targets.append(endpoint)
                    messages.append(message)
            await add_messages(session, targets, messages)
            await session.execute(
                delete(OutboundEvent).where(OutboundEvent.id.in_([e.id for e in events]))
            )
        return len(events)

    async def _messages(
        self,
        session: AsyncSession,
        endpoints: list[OutboundEndpoint],
        event: OutboundEvent,
        job: Job,
    ) -> list[tuple[uuid.UUID, Message]]:
        def render(prompt: bool) -> dict[str, Any]:
            out = job_out(self._links, job, include_prompt=prompt)
            return job_data(out, job.owner, event.job_event_id)

        if event.type == EventType.JOB_DELETED:
            await _forget_prompt(session, job)
        key = f"job_event:{event.job_event_id}" if event.job_event_id else f"{event.type}:{job.id}"
        messages = _for_endpoints(endpoints, event, event.type, key, (job.id, None), render)
        if event.job_event_id is not None and job.status in TERMINAL:
            messages += await _settled(session, endpoints, event, job)
            if job.batch_id is not None:
                messages += await self._batch_completed(session, endpoints, event, job.batch_id)
        return messages

    async def _batch_completed(
        self,
        session: AsyncSession,
        endpoints: list[OutboundEndpoint],
        event: OutboundEvent,
        batch_id: uuid.UUID,
    ) -> list[tuple[uuid.UUID, Message]]:
        if not any(EventType.BATCH_COMPLETED in e.events for e in endpoints):
            return []
        unfinished = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.batch_id == batch_id, Job.status.not_in(list(TERMINAL)))
        )
        if unfinished:
            return []
        batch = await session.get(Batch, batch_id)
        assert batch is not None
        variants = await batch_jobs(session, batch_id)

        def render(prompt: bool) -> dict[str, Any]:
            jobs = [job_out(self._links, job, include_prompt=prompt) for job in variants]
            return batch_data(batch, jobs, event.job_event_id or 0)

        key = f"{EventType.BATCH_COMPLETED}:{batch_id}"
        about = (None, batch_id)
        return _for_endpoints(endpoints, event, EventType.BATCH_COMPLETED, key, about, render)


def user_event_key(subject: str) -> str:
    """The start of the dedupe key of every message about `subject` (erasure finds them)."""
    return f"user:{subject}:"


async def _about_user(
    session: AsyncSession, endpoints: list[OutboundEndpoint], event: OutboundEvent
) -> list[tuple[uuid.UUID, Message]]:
    """`user.suspended`: the suspension as it stands (none if lifted since: nothing sent)."""
    assert event.subject is not None
    suspension = await session.get(Suspension, event.subject)
    if suspension is None:
        return []

    def render(prompt: bool) -> dict[str, Any]:
        return {
            "subject": event.subject,
            "reason": suspension.reason,
            "since": suspension.since.isoformat(),
            "until": suspension.until.isoformat() if suspension.until else None,
        }

    key = f"{user_event_key(event.subject)}{event.type}:{event.id}"
    return _for_endpoints(endpoints, event, event.type, key, (None, None), render)


_SETTLEMENTS = {
    CreditState.CHARGED: (EventType.CREDITS_CHARGED, TransferKind.CHARGE),
    CreditState.REFUNDED: (EventType.CREDITS_REFUNDED, TransferKind.RELEASE),
}


async def _settled(
    session: AsyncSession, endpoints: list[OutboundEndpoint], event: OutboundEvent, job: Job
) -> list[tuple[uuid.UUID, Message]]:
    """`credits.charged` or `credits.refunded` for a job whose hold its last move settled.
    `data.id` is the ledger transfer's key (`charge:<job>`, `release:<job>`): the same
    however often it is sent, so a forwarder to a billing meter counts it once."""
    if job.credit_state not in _SETTLEMENTS:
        return []
    event_type, kind = _SETTLEMENTS[CreditState(job.credit_state)]
    if not any(event_type in endpoint.events for endpoint in endpoints):
        return []
    transfer = await session.scalar(
        select(CreditTransfer).where(CreditTransfer.job_id == job.id, CreditTransfer.kind == kind)
    )
    if transfer is None:
        return []  # a job erased since: nothing to tell

    def render(prompt: bool) -> dict[str, Any]:
        return {
            "id": f"{kind}:{job.id}",
            "owner": job.owner,
            "job_id": str(job.id),
            "model": job.model,
            "amount": transfer.amount,
            "balance_after": transfer.balance_after,
            "at": transfer.created_at.isoformat(),
        }

    key = f"{event_type}:{job.id}"
    return _for_endpoints(endpoints, event, event_type, key, (job.id, None), render)


def _about_account(
    endpoints: list[OutboundEndpoint], event: OutboundEvent
) -> list[tuple[uuid.UUID, Message]]:
    """`account.paused` / `account.resumed`: the facts frozen when it happened."""
    data = event.data or {}
    key = f"account:{event.type}:{event.id}"
    return _for_endpoints(endpoints, event, event.type, key, (None, None), lambda _: data)


def _for_endpoints(
    endpoints: list[OutboundEndpoint],
    event: OutboundEvent,
    event_type: str,
    key: str,
    about: tuple[uuid.UUID | None, uuid.UUID | None],
    render: Callable[[bool], dict[str, Any]],
) -> list[tuple[uuid.UUID, Message]]:
    """The message of one event for each endpoint subscribed to its type; the payload is
    rendered at most twice (with and without prompts)."""
    payloads: dict[bool, str] = {}
    out: list[tuple[uuid.UUID, Message]] = []
    for endpoint in endpoints:
        if event_type not in endpoint.events:
            continue
        prompt = endpoint.include_prompts
        if prompt not in payloads:
            payloads[prompt] = envelope(event_type, event.at, render(prompt))
        out.append((endpoint.id, Message(event_type, key, *about, payloads[prompt])))
    return out


async def _forget_prompt(session: AsyncSession, job: Job) -> None:
    """A deleted job's prompt goes from the messages about it too (its own events, and its
    batch's completion), and so do the answers receivers gave to them (an echo holds the
    prompt): a retry sends them without it, and our database keeps none."""
    about = [OutboundMessage.job_id == job.id]
    if job.batch_id is not None:
        about.append(OutboundMessage.batch_id == job.batch_id)
    messages = list(await session.scalars(select(OutboundMessage).where(or_(*about))))
    for message in messages:
        message.payload = without_user_text(message.payload, job.id)
    await session.execute(
        update(OutboundAttempt)
        .where(OutboundAttempt.message_id.in_([message.id for message in messages]))
        .values(response_body=None)
    )
