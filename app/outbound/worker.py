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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Insert, Update, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import is_database_unavailable, write_through_outage
from app.db.models import OutboundAttempt, OutboundEndpoint, OutboundMessage, UTCDateTime
from app.db.one_row import OneRowStatement
from app.kit.loops import PooledLoop
from app.media.links import MediaLinks
from app.ops.metrics import OUTBOUND_ATTEMPTS, OUTBOUND_ENDPOINTS_DISABLED
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


def _claim_statement() -> Update:
    """Up to `:claim_room` due messages of endpoint `:claim_endpoint`, claimed in one
    statement: the rows are picked with SKIP LOCKED (another replica's claim passes them
    by) and leased until `:claim_lease`. Built once: a round per freed slot makes it hot."""
    now = bindparam("claim_now", type_=UTCDateTime())
    due = (
        select(_MESSAGES.c.id)
        .where(
            _MESSAGES.c.endpoint_id == bindparam("claim_endpoint"),
            _MESSAGES.c.status == MessageStatus.PENDING,
            _MESSAGES.c.next_attempt_at <= now,
        )
        .order_by(_MESSAGES.c.next_attempt_at, _MESSAGES.c.id)
        .limit(bindparam("claim_room"))
        .with_for_update(skip_locked=True)
    )
    return (
        update(_MESSAGES)
        .where(_MESSAGES.c.id.in_(due))
        .values(
            attempts=_MESSAGES.c.attempts + 1,
            next_attempt_at=bindparam("claim_lease", type_=UTCDateTime()),
        )
        .returning(_MESSAGES.c.id, _MESSAGES.c.attempts, _MESSAGES.c.payload)
    )


_CLAIM = _claim_statement()


def _claimed(order: SendOrder) -> Update:
    """The UPDATE of a message whose claim by `order` still holds (re-checked under the
    row lock), returning its id: nothing when a later claim superseded it."""
    return (
        update(_MESSAGES)
        .where(
            _MESSAGES.c.id == order.message_id,
            _MESSAGES.c.status == MessageStatus.PENDING,
            _MESSAGES.c.attempts == order.attempt,
        )
        .returning(_MESSAGES.c.id)
    )


def _record_statement() -> Insert:
    """An attempt's outcome as one statement (Postgres): the message's UPDATE, under its
    claim (see `_claimed`), feeds the attempt's INSERT; nothing is written when the claim
    was superseded."""
    messages, attempts = _MESSAGES.c, OutboundAttempt.__table__
    at = bindparam("at", type_=UTCDateTime())
    status_code = bindparam("status_code", type_=attempts.c.status_code.type)
    error = bindparam("error", type_=attempts.c.error.type)
    updated = (
        update(_MESSAGES)
        .where(
            messages.id == bindparam("message_id"),
            messages.status == MessageStatus.PENDING,
            messages.attempts == bindparam("attempt"),
        )
        .values(
            status=bindparam("status", type_=messages.status.type),
            delivered_at=bindparam("delivered_at", type_=UTCDateTime()),
            next_attempt_at=bindparam("next_attempt_at", type_=UTCDateTime()),
            last_status_code=status_code,
            last_error=error,
        )
        .returning(messages.id)
        .cte("updated")
    )
    row = select(
        updated.c.id,
        at,
        bindparam("result", type_=attempts.c.result.type),
        status_code,
        bindparam("latency_ms", type_=attempts.c.latency_ms.type),
        error,
        bindparam("response_body", type_=attempts.c.response_body.type),
    )
    columns = ["message_id", "at", "result", "status_code", "latency_ms", "error", "response_body"]
    return insert(attempts).from_select(columns, row).returning(attempts.c.id)


_RECORD = OneRowStatement(_record_statement())


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
                claimed = (await conn.execute(_CLAIM, claim)).all()
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
            recorded = await _RECORD.first(self._engine, **values) is not None
        else:  # SQLite has no UPDATE inside WITH
            async with self._sessionmaker() as session, session.begin():
                recorded = await session.scalar(_claimed(order).values(message)) is not None
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
        endpoint = update(_ENDPOINTS).where(_ENDPOINTS.c.id == order.endpoint_id)
        if outcome.result is AttemptResult.DELIVERED:
            if order.failing_since is not None:
                await self._execute(endpoint.values(failing_since=None))
        elif order.failing_since is None:
            first_failure = _ENDPOINTS.c.failing_since.is_(None)
            await self._execute(endpoint.where(first_failure).values(failing_since=now))
        elif now - order.failing_since >= self._disable_after():
            await self._disable_if_failing_too_long(order.endpoint_id, outcome, now)

    async def _execute(self, statement: Update) -> Any:
        """Run an endpoint update; its RETURNING value, if it has one."""
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
            return result.scalar() if result.returns_rows else None

    def _disable_after(self) -> timedelta:
        return timedelta(seconds=self._settings.outbound_disable_after_seconds)

    async def _disable_if_failing_too_long(
        self, endpoint_id: uuid.UUID, outcome: Outcome, now: datetime
    ) -> None:
        limit = self._disable_after()
        disabled = await self._execute(
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
