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
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import select, update
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


@dataclass(frozen=True, slots=True)
class SendOrder:
    """A claimed message and what sending it needs, read in the claim's transaction."""

    message_id: uuid.UUID
    attempt: int
    endpoint_id: uuid.UUID
    url: str
    payload: str
    secrets: list[str]


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

    async def close(self) -> None:
        await self._http.aclose()

    def lease(self) -> timedelta:
        """How long a claimed message is ours: its attempt's deadline, with room to record."""
        return timedelta(seconds=2 * self._settings.outbound_timeout_seconds + 5)

    async def run_once(self) -> int:
        fanned = await self._fanout.run()
        if fanned == BATCH:
            self.wake()  # more in the outbox
        orders = await self._claim()
        for order in orders:
            self._sending[order.endpoint_id] += 1
            self.spawn(self._deliver(order), name=f"webhook-{order.message_id}")
        return fanned + len(orders)

    async def _claim(self) -> list[SendOrder]:
        free = self.free_slots
        if free <= 0:
            return []
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
                messages = list(
                    await session.scalars(
                        select(OutboundMessage)
                        .where(
                            OutboundMessage.endpoint_id == endpoint.id,
                            OutboundMessage.status == MessageStatus.PENDING,
                            OutboundMessage.next_attempt_at <= now,
                        )
                        .order_by(OutboundMessage.next_attempt_at, OutboundMessage.id)
                        .limit(room)
                        .with_for_update(skip_locked=True)
                    )
                )
                if not messages:
                    continue
                secrets = signing_secrets(endpoint, self._box, now)
                for message in messages:
                    message.attempts += 1
                    message.next_attempt_at = now + self.lease()
                    orders.append(
                        SendOrder(
                            message.id,
                            message.attempts,
                            endpoint.id,
                            endpoint.url,
                            message.payload,
                            secrets,
                        )
                    )
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

    def _retry_delay(self, attempts: int) -> timedelta | None:
        """The wait after the `attempts`-th failure, or None when the schedule is spent."""
        schedule = self._settings.outbound_retry_schedule
        if attempts > len(schedule):
            return None
        spread = random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not a secret
        return timedelta(seconds=schedule[attempts - 1] * spread)

    async def _record(self, order: SendOrder, outcome: Outcome) -> None:
        now = datetime.now(UTC)
        async with self._sessionmaker() as session, session.begin():
            message = await session.get(
                OutboundMessage, order.message_id, with_for_update=True, populate_existing=True
            )
            if (
                message is None
                or message.status != MessageStatus.PENDING
                or message.attempts != order.attempt
            ):
                logger.warning("webhook %s: attempt superseded", webhook_id(order.message_id))
                return
            session.add(
                OutboundAttempt(
                    message_id=message.id,
                    at=now,
                    result=outcome.result,
                    status_code=outcome.status_code,
                    latency_ms=outcome.latency_ms,
                    error=outcome.error,
                    response_body=outcome.response_body,
                )
            )
            message.last_status_code = outcome.status_code
            message.last_error = outcome.error
            endpoints = update(OutboundEndpoint).where(OutboundEndpoint.id == order.endpoint_id)
            if outcome.result is AttemptResult.DELIVERED:
                message.status = MessageStatus.DELIVERED
                message.delivered_at = now
                await session.execute(
                    endpoints.where(OutboundEndpoint.failing_since.is_not(None)).values(
                        failing_since=None
                    )
                )
                return
            delay = self._retry_delay(message.attempts)
            if delay is None:
                message.status = MessageStatus.FAILED
                logger.warning(
                    "webhook %s: given up after %d attempts (%s)",
                    webhook_id(message.id),
                    message.attempts,
                    outcome.error,
                )
            else:
                message.next_attempt_at = now + delay
            await session.execute(
                endpoints.where(OutboundEndpoint.failing_since.is_(None)).values(failing_since=now)
            )
            await self._disable_if_failing_too_long(session, order.endpoint_id, outcome, now)

    async def _disable_if_failing_too_long(
        self, session: AsyncSession, endpoint_id: uuid.UUID, outcome: Outcome, now: datetime
    ) -> None:
        limit = timedelta(seconds=self._settings.outbound_disable_after_seconds)
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
