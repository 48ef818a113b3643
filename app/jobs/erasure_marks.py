"""Erasure covers work in flight. An erasure marks its subject (a digest of it) when it
begins, under the owner's lock (`budget.lock_owner`), and notes when it ended. A create or
an upload takes the same lock where it commits and is refused (410 `subject_erased`)
when its subject was being erased, or was erased after the request began: what was in
flight when the erasure ran never lands under the erased subject, and a request that
begins after the erasure answered is a fresh start. Marks go an hour after their erasure
ended (no request in flight is older)."""

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ErasureMark
from app.kit.errors import ProblemError

KEPT = timedelta(hours=1)


def _digest(subject: str) -> str:
    return hashlib.sha256(f"erasure:{subject}".encode()).hexdigest()


async def check_not_erased(session: AsyncSession, subject: str, started_at: datetime) -> None:
    """Under the owner's lock: 410 if `subject` is being erased, or was erased after a
    request that began at `started_at`."""
    mark = await session.get(ErasureMark, _digest(subject), populate_existing=True)
    if mark is None or (mark.finished_at is not None and mark.finished_at <= started_at):
        return
    await session.rollback()
    raise ProblemError(
        410,
        "subject_erased",
        "This account's data was erased while the request was under way; nothing of it was "
        "kept. Send it again to start afresh.",
    )


async def erasing(session: AsyncSession, subject: str) -> None:
    """Under the owner's lock, in the erasure's first transaction."""
    now = datetime.now(UTC)
    await session.execute(delete(ErasureMark).where(ErasureMark.finished_at < now - KEPT))
    mark = await session.get(ErasureMark, _digest(subject), with_for_update=True)
    if mark is None:
        session.add(ErasureMark(subject_digest=_digest(subject), started_at=now))
    else:
        mark.started_at, mark.finished_at = now, None


async def erased(session: AsyncSession, subject: str) -> None:
    """In the erasure's last transaction: requests that begin from now on are fresh."""
    mark = await session.get(ErasureMark, _digest(subject), with_for_update=True)
    if mark is not None:
        mark.finished_at = datetime.now(UTC)
