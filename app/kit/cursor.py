"""Opaque keyset cursors for newest-first lists (jobs, webhook deliveries): (created_at, id)
of the last row seen."""

import base64
import uuid
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.kit.errors import invalid_field


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), str(job_id)])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = orjson.loads(raw)
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, uuid.UUID(job_id)
    except (ValueError, TypeError) as exc:  # binascii and orjson errors are ValueErrors
        detail = "The cursor is not one this service issued."
        raise invalid_field("cursor", "invalid_cursor", "unknown cursor", detail) from exc


Row = TypeVar("Row")


async def newest_first_page(
    session: AsyncSession,
    query: Select[Row],
    keys: tuple[InstrumentedAttribute[datetime], InstrumentedAttribute[uuid.UUID]],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row], str | None]:
    """One page of `query`'s rows, newest first by `keys` (created_at, id), and the cursor
    of the next page (None at the end)."""
    created_at, row_id = keys
    if cursor is not None:
        query = query.where(tuple_(created_at, row_id) < tuple_(*decode_cursor(cursor)))
    query = query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)
    rows: list[Row] = list(await session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    last: Any = page[-1] if more else None
    next_cursor = encode_cursor(last.created_at, last.id) if more else None
    return page, next_cursor
