"""Opaque keyset cursors for newest-first job lists: (created_at, id) of the last row seen."""

import base64
import uuid
from datetime import datetime

import orjson

from app.errors import FieldError, ProblemError


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
        raise ProblemError(
            422,
            "validation_failed",
            "The cursor is not one this service issued.",
            errors=[FieldError(field="cursor", code="invalid_cursor", message="unknown cursor")],
        ) from exc
