"""Pruning what only grows: job moves (`job_events`) older than EVENTS_RETENTION_DAYS, and,
through the pruners other domains hand it, their own old rows (finished webhook messages
with their attempts: `app/outbound/retention.py`).

Each batch is its own short transaction (a few thousand rows), so no lock is held for
long and the write-ahead log grows in small steps; a sweep goes on batch after batch
until it reaches rows younger than the cutoff. A job's latest move is kept: its live
stream starts from it, and an old job's history still ends with how it ended.

Moves are visited in id order (ids follow time), from where the last sweep of this
process stopped: the kept latest moves of old jobs are read once per process, not once
per sweep.
"""

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from app.config import Settings
from app.db.models import JobEvent
from app.kit.loops import Loop

RETENTION_BATCH = 5000
# Another domain's pruning of what it keeps (finished webhook messages): one batch of rows
# older than the cutoff, at most `batch` of them; how many went (0: none left).
Pruner = Callable[[async_sessionmaker[AsyncSession], datetime, int], Awaitable[int]]


class RetentionSweeper(Loop):
    name = "retention"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        pruners: Sequence[Pruner] = (),
    ) -> None:
        super().__init__(settings.retention_sweep_seconds)
        self._sessionmaker = sessionmaker
        self._pruners = pruners
        self._days = settings.events_retention_days
        self._events_after = 0  # moves up to this id were visited by an earlier sweep

    async def run_once(self) -> int:
        if self._days is None:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=self._days)
        removed, more = 0, True
        while more and not self._stopping:
            batch, more = await self._prune_events(cutoff)
            removed += batch
        for prune in self._pruners:
            while not self._stopping and (
                batch := await prune(self._sessionmaker, cutoff, RETENTION_BATCH)
            ):
                removed += batch
        return removed

    async def _prune_events(self, cutoff: datetime) -> tuple[int, bool]:
        """One window of moves after the last one visited: remove the old ones but each
        job's latest. How many went, and whether the next window may hold old ones too."""
        async with self._sessionmaker() as session, session.begin():
            window = (
                await session.execute(
                    select(JobEvent.id, JobEvent.at)
                    .where(JobEvent.id > self._events_after)
                    .order_by(JobEvent.id)
                    .limit(RETENTION_BATCH)
                )
            ).all()
            if not window:
                return 0, False
            first_young = next((event_id for event_id, at in window if at >= cutoff), None)
            end = window[-1][0] if first_young is None else first_young - 1
            later = aliased(JobEvent)
            has_later_move = (
                select(later.id)
                .where(later.job_id == JobEvent.job_id, later.id > JobEvent.id)
                .exists()
            )
            result = await session.execute(
                delete(JobEvent).where(
                    JobEvent.id > self._events_after,
                    JobEvent.id <= end,
                    JobEvent.at < cutoff,
                    has_later_move,
                )
            )
        self._events_after = end  # the next window, or the next sweep, starts after it
        # a DELETE's result is a CursorResult, which Session.execute's type does not say
        return result.rowcount, first_young is None  # type: ignore[attr-defined]
