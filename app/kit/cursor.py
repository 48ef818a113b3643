"""Opaque keyset cursors for lists in time order (jobs, webhook deliveries newest first;
the review queue by rank): (time, id) of the last row seen."""

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
    oldest_first: bool = False,
) -> tuple[list[Row], str | None]:
    """One page of `query`'s rows, newest first by `keys` (a time, then the id; oldest first
    if asked), and the cursor of the next page (None at the end)."""
    at, row_id = keys
    if cursor is not None:
        seen = tuple_(*decode_cursor(cursor))
        query = query.where(
            tuple_(at, row_id) > seen if oldest_first else tuple_(at, row_id) < seen
        )
    order = (at.asc(), row_id.asc()) if oldest_first else (at.desc(), row_id.desc())
    rows: list[Row] = list(await session.scalars(query.order_by(*order).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    last: Any = page[-1] if more else None
    next_cursor = encode_cursor(getattr(last, at.key), getattr(last, row_id.key)) if more else None
    return page, next_cursor
