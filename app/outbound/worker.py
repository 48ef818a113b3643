"""The delivery worker: fans the outbox out into messages, then sends the messages due.

Messages are claimed as the dispatcher claims jobs (`FOR UPDATE SKIP LOCKED`, several
replicas share the work), under a lease (`next_attempt_at`): a send cut by a crash or a
SIGKILL is claimed again when the lease runs out, and a worker whose claim was superseded
records nothing. Each replica keeps at most OUTBOUND_ENDPOINT_CONCURRENCY sends in flight
per endpoint, so a slow receiver holds its own slots, not the others'. A failed attempt
is retried on OUTBOUND_RETRY_SCHEDULE (jittered); an endpoint failing for
OUTBOUND_DISABLE_AFTER_SECONDS without a success is disabled, loudly.
"""

import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Update, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import write_through_outage
from app.db.models import OutboundAttempt, OutboundEndpoint, OutboundMessage
from app.jobs.background import PooledLoop
from app.media.links import MediaLinks
from app.metrics import OUTBOUND_ATTEMPTS, OUTBOUND_ENDPOINTS_DISABLED
from app.outbound.endpoints import signing_secrets
from app.outbound.fanout import BATCH, Fanout
from app.outbound.sender import Outcome, create_http_client, send
from app.outbound.signing import SecretBox
from app.outbound.states import AttemptResult, MessageStatus, webhook_id

logger = logging.getLogger(__name__)
JITTER = 0.2


def retry_delay(schedule: list[float], attempts: int) -> timedelta | None:
    """The wait after the `attempts`-th failure, or None when the schedule is spent."""
    if attempts > len(schedule):
        return None
    spread = random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not a secret
    return timedelta(seconds=schedule[attempts - 1] * spread)


@dataclass(frozen=True, slots=True)
class SendOrder:
    """A claimed message and what sending it needs, read in the claim's transaction."""

    message_id: uuid.UUID
    attempt: int
    endpoint_id: uuid.UUID
    url: str
    payload: str
    secrets: list[str]
    failing_since: datetime | None  # the endpoint's, at the claim


_MESSAGES = OutboundMessage.__table__
_ENDPOINTS = OutboundEndpoint.__table__


def _claim_statement(endpoint_id: uuid.UUID, room: int, now: datetime, lease: datetime) -> Update:
    """Up to `room` due messages of one endpoint, claimed in one statement: the rows are
    picked with SKIP LOCKED (another replica's claim passes them by) and leased."""
    due = (
        select(_MESSAGES.c.id)
        .where(
            _MESSAGES.c.endpoint_id == endpoint_id,
            _MESSAGES.c.status == MessageStatus.PENDING,
            _MESSAGES.c.next_attempt_at <= now,
        )
        .order_by(_MESSAGES.c.next_attempt_at, _MESSAGES.c.id)
        .limit(room)
        .with_for_update(skip_locked=True)
    )
    return (
        update(_MESSAGES)
        .where(_MESSAGES.c.id.in_(due))
        .values(attempts=_MESSAGES.c.attempts + 1, next_attempt_at=lease)
        .returning(_MESSAGES.c.id, _MESSAGES.c.attempts, _MESSAGES.c.payload)
    )


class OutboundWorker(PooledLoop):
    name = "outbound"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        links: MediaLinks,
        box: SecretBox,
        settings: Settings,
    ) -> None:
        super().__init__(settings.outbound_poll_seconds, settings.outbound_concurrency)
        self._sessionmaker = sessionmaker
        self._fanout = Fanout(sessionmaker, links)
        self._box = box
        self._settings = settings
        self._http = create_http_client(settings)
        self._sending: Counter[uuid.UUID] = Counter()  # in flight, per endpoint
        self._outbox_due = True
        self._outbox_read_at = 0.0

    async def close(self) -> None:
        await self._http.aclose()

    def on_move(self) -> None:
        """A job moved (here or on another replica): the outbox has a row to fan out."""
        self._outbox_due = True
        self.wake()

    def lease(self) -> timedelta:
        """How long a claimed message is ours: its attempt's deadline, with room to record."""
        return timedelta(seconds=2 * self._settings.outbound_timeout_seconds + 5)

    async def run_once(self) -> int:
        """Fan the outbox out when a move was noticed or a poll interval has passed (a
        deletion is not noticed), then claim what the free slots can take. Most rounds
        follow a finished send and only claim."""
        fanned = 0
        clock = time.monotonic()
        if self._outbox_due or clock - self._outbox_read_at >= self._settings.outbound_poll_seconds:
            self._outbox_due, self._outbox_read_at = False, clock
            fanned = await self._fanout.run()
            self._outbox_due = fanned == BATCH  # more in the outbox
        orders = await self._claim() if self.free_slots > 0 else []
        for order in orders:
            self._sending[order.endpoint_id] += 1
            self.spawn(self._deliver(order), name=f"webhook-{order.message_id}")
        if self._outbox_due:
            self.wake()
        return fanned + len(orders)

    async def _claim(self) -> list[SendOrder]:
        free = self.free_slots
        now = datetime.now(UTC)
        orders: list[SendOrder] = []
        async with self._sessionmaker() as session, session.begin():
            endpoints = list(
                await session.scalars(select(OutboundEndpoint).where(OutboundEndpoint.enabled))
            )
            random.shuffle(endpoints)  # no endpoint always first in line for the free slots
            for endpoint in endpoints:
                room = min(
                    free - len(orders),
                    self._settings.outbound_endpoint_concurrency - self._sending[endpoint.id],
                )
                if room <= 0:
                    continue
                claimed = (
                    await session.execute(
                        _claim_statement(endpoint.id, room, now, now + self.lease())
                    )
                ).all()
                if not claimed:
                    continue
                secrets = signing_secrets(endpoint, self._box, now)
                orders += [
                    SendOrder(
                        message_id,
                        attempt,
                        endpoint.id,
                        endpoint.url,
                        payload,
                        secrets,
                        endpoint.failing_since,
                    )
                    for message_id, attempt, payload in claimed
                ]
        return orders

    async def _deliver(self, order: SendOrder) -> None:
        try:
            outcome = await send(
                self._http,
                order.url,
                webhook_id(order.message_id),
                order.payload,
                order.secrets,
                self._settings,
            )
            OUTBOUND_ATTEMPTS.labels(str(order.endpoint_id), outcome.result).inc()
            record = partial(self._record, order, outcome)
            await write_through_outage(record, self.lease().total_seconds())
        except Exception:  # the lease runs out and the message is sent again
            logger.exception("webhook %s: could not record attempt", webhook_id(order.message_id))
        finally:
            self._sending[order.endpoint_id] -= 1
            if not self._sending[order.endpoint_id]:
                del self._sending[order.endpoint_id]

    def _message_outcome(self, order: SendOrder, outcome: Outcome, now: datetime) -> dict[str, Any]:
        """The message's columns after this attempt."""
        values: dict[str, Any] = {
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
        }
        if outcome.result is AttemptResult.DELIVERED:
            return {**values, "status": MessageStatus.DELIVERED, "delivered_at": now}
        delay = retry_delay(self._settings.outbound_retry_schedule, order.attempt)
        if delay is None:
            logger.warning(
                "webhook %s: given up after %d attempts (%s)",
                webhook_id(order.message_id),
                order.attempt,
                outcome.error,
            )
            return {**values, "status": MessageStatus.FAILED}
        return {**values, "next_attempt_at": now + delay}

    async def _record(self, order: SendOrder, outcome: Outcome) -> None:
        """The attempt's outcome, if this claim still holds: two statements on the happy
        path (the message, its attempt), the endpoint's record only when it changes."""
        now = datetime.now(UTC)
        async with self._sessionmaker() as session, session.begin():
            still_ours = await session.scalar(
                update(_MESSAGES)
                .where(
                    _MESSAGES.c.id == order.message_id,
                    _MESSAGES.c.status == MessageStatus.PENDING,
                    _MESSAGES.c.attempts == order.attempt,
                )
                .values(self._message_outcome(order, outcome, now))
                .returning(_MESSAGES.c.id)
            )
            if still_ours is None:
                logger.warning("webhook %s: attempt superseded", webhook_id(order.message_id))
                return
            await session.execute(
                insert(OutboundAttempt.__table__).values(
                    message_id=order.message_id,
                    at=now,
                    result=outcome.result,
                    status_code=outcome.status_code,
                    latency_ms=outcome.latency_ms,
                    error=outcome.error,
                    response_body=outcome.response_body,
                )
            )
            endpoint = update(_ENDPOINTS).where(_ENDPOINTS.c.id == order.endpoint_id)
            if outcome.result is AttemptResult.DELIVERED:
                if order.failing_since is not None:
                    await session.execute(endpoint.values(failing_since=None))
            elif order.failing_since is None:
                await session.execute(
                    endpoint.where(_ENDPOINTS.c.failing_since.is_(None)).values(failing_since=now)
                )
            elif now - order.failing_since >= self._disable_after():
                await self._disable_if_failing_too_long(session, order.endpoint_id, outcome, now)

    def _disable_after(self) -> timedelta:
        return timedelta(seconds=self._settings.outbound_disable_after_seconds)

    async def _disable_if_failing_too_long(
        self, session: AsyncSession, endpoint_id: uuid.UUID, outcome: Outcome, now: datetime
    ) -> None:
        limit = self._disable_after()
        disabled = await session.scalar(
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
            .returning(OutboundEndpoint.url)
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
