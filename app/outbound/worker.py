"""The delivery worker: fans the outbox out into messages, then sends the messages due.

Messages are claimed as the dispatcher claims jobs (`FOR UPDATE SKIP LOCKED`, several
replicas share the work), under a lease (`next_attempt_at`): a send cut by a crash or a
SIGKILL is claimed again when the lease runs out, and a worker whose claim was superseded
records nothing. Each replica keeps at most OUTBOUND_ENDPOINT_CONCURRENCY sends in flight
per endpoint, so a slow receiver holds its own slots, not the others'. A failed attempt
is retried on OUTBOUND_RETRY_SCHEDULE (jittered); an endpoint failing for
OUTBOUND_DISABLE_AFTER_SECONDS without a success is disabled, loudly (`endpoint_health.py`);
the statements live in `claims.py`.
"""

import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import is_database_unavailable, write_through_outage
from app.db.models import OutboundAttempt, OutboundEndpoint
from app.kit.loops import PooledLoop
from app.media.links import MediaLinks
from app.ops.metrics import OUTBOUND_ATTEMPTS
from app.outbound.claims import CLAIM, RECORD, SendOrder, claimed
from app.outbound.endpoint_health import note_endpoint_outcome
from app.outbound.endpoints import signing_secrets
from app.outbound.fanout import BATCH, Fanout
from app.outbound.sender import Outcome, create_http_client, send
from app.outbound.signing import SecretBox
from app.outbound.states import AttemptResult, MessageStatus, webhook_id

logger = logging.getLogger(__name__)
_ENDPOINTS = OutboundEndpoint.__table__
JITTER = 0.2


def retry_delay(schedule: list[float], attempts: int) -> timedelta | None:
    """The wait after the `attempts`-th failure, or None when the schedule is spent."""
    if attempts > len(schedule):
        return None
    spread = random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not a secret
    return timedelta(seconds=schedule[attempts - 1] * spread)


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
        self._engine: AsyncEngine = sessionmaker.kw["bind"]
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
        async with self._engine.begin() as conn:  # Core: a round a slot, no session needed
            endpoints = list(await conn.execute(select(_ENDPOINTS).where(_ENDPOINTS.c.enabled)))
            random.shuffle(endpoints)  # no endpoint always first in line for the free slots
            for endpoint in endpoints:
                room = min(
                    free - len(orders),
                    self._settings.outbound_endpoint_concurrency - self._sending[endpoint.id],
                )
                if room <= 0:
                    continue
                lease = now + self.lease()
                params = {"endpoint": endpoint.id, "room": room, "now": now, "lease": lease}
                claim = {f"claim_{name}": value for name, value in params.items()}
                claimed = (await conn.execute(CLAIM, claim)).all()
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
            await self._record_somehow(order, outcome)
        except Exception:  # the lease runs out and the message is sent again
            logger.exception("webhook %s: could not record attempt", webhook_id(order.message_id))
        finally:
            self._sending[order.endpoint_id] -= 1
            if not self._sending[order.endpoint_id]:
                del self._sending[order.endpoint_id]

    async def _record_somehow(self, order: SendOrder, outcome: Outcome) -> None:
        """Record the outcome, waiting out a database outage. What the receiver said is
        the one part of it that is not ours: if the database refuses it, the outcome is
        recorded without it, so a receiver's answer can never make a delivered message
        pending again (and sent again at every lease, without end)."""
        lease = self.lease().total_seconds()
        try:
            await write_through_outage(partial(self._record, order, outcome), lease)
        except Exception as exc:
            if is_database_unavailable(exc) or outcome.response_body is None:
                raise
            logger.warning(
                "webhook %s: the receiver's answer could not be stored (%s); recorded without",
                webhook_id(order.message_id),
                type(exc).__name__,
            )
            bare = replace(outcome, response_body=None)
            await write_through_outage(partial(self._record, order, bare), lease)

    def _message_outcome(self, order: SendOrder, outcome: Outcome, now: datetime) -> dict[str, Any]:
        """The message's columns after this attempt."""
        values: dict[str, Any] = {
            "status": MessageStatus.PENDING,
            "delivered_at": None,
            "next_attempt_at": now,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
        }
        if outcome.result is AttemptResult.DELIVERED:
            return {**values, "status": MessageStatus.DELIVERED, "delivered_at": now}
        delay = retry_delay(self._settings.outbound_retry_schedule, order.attempt)
        if delay is None:
            return {**values, "status": MessageStatus.FAILED}
        return {**values, "next_attempt_at": now + delay}

    async def _record(self, order: SendOrder, outcome: Outcome) -> None:
        """The attempt's outcome, if this claim still holds; the endpoint's record only when
        it changes (a first failure, a success after failures, a limit reached)."""
        now = datetime.now(UTC)
        attempt = {
            "message_id": order.message_id,
            "at": now,
            "result": outcome.result,
            "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
            "error": outcome.error,
            "response_body": outcome.response_body,
        }
        message = self._message_outcome(order, outcome, now)
        if self._engine.dialect.name == "postgresql":
            values = {**message, **attempt, "attempt": order.attempt}
            recorded = await RECORD.first(self._engine, **values) is not None
        else:  # SQLite has no UPDATE inside WITH
            async with self._sessionmaker() as session, session.begin():
                recorded = await session.scalar(claimed(order).values(message)) is not None
                if recorded:
                    await session.execute(insert(OutboundAttempt.__table__).values(attempt))
        if not recorded:
            logger.warning("webhook %s: attempt superseded", webhook_id(order.message_id))
            return
        if message["status"] == MessageStatus.FAILED:
            logger.warning(
                "webhook %s: given up after %d attempts (%s)",
                webhook_id(order.message_id),
                order.attempt,
                outcome.error,
            )
        await note_endpoint_outcome(self._engine, self._settings, order, outcome, now)
