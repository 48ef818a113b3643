"""The statements that claim due messages and record an attempt's outcome, and what a claim
hands the sender. Built once: a round per freed slot makes them hot."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Insert, Update, bindparam, insert, select, update

from app.db.models import OutboundAttempt, OutboundMessage, UTCDateTime
from app.db.one_row import OneRowStatement
from app.outbound.states import MessageStatus


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


CLAIM = _claim_statement()


def claimed(order: SendOrder) -> Update:
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
    claim (see `claimed`), feeds the attempt's INSERT; nothing is written when the claim
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


RECORD = OneRowStatement(_record_statement())
