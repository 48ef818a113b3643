"""How long the Seedance account's credits last: its balance as an operator last recorded
it, less what Seedance took since (each job it accepted, at its estimated cost: Seedance
publishes no price table, UPSTREAM.md), over the spend of the last seven days."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Job
from app.jobs import scheduler

DAYS = 7


@dataclass(frozen=True, slots=True)
class DaySpend:
    day: date
    credits: int


@dataclass(frozen=True, slots=True)
class Forecast:
    recorded_credits: int | None
    recorded_at: datetime | None
    spent_since_recorded: int
    remaining: int | None
    spend_by_day: list[DaySpend]  # the last DAYS days (UTC), today last and partial
    daily_average: float  # over the last DAYS x 24 hours
    days_left: float | None  # None: no balance recorded, or nothing spent


async def _spent(session: AsyncSession, start: datetime, end: datetime) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(Job.estimated_cost), 0)).where(
            Job.submitted_at >= start, Job.submitted_at < end
        )
    )
    return int(total or 0)


async def forecast(session: AsyncSession, *, by_day: bool = True) -> Forecast:
    """`by_day=False` leaves `spend_by_day` empty (a metrics scrape: two queries)."""
    now = datetime.now(UTC)
    account = await scheduler.learned_capacity(session)
    recorded = account.account_credits if account else None
    recorded_at = account.account_credits_at if account else None
    spent_since = await _spent(session, recorded_at, now) if recorded_at else 0
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    for back in range(DAYS - 1, -1, -1) if by_day else ():
        start = today - timedelta(days=back)
        days.append(DaySpend(start.date(), await _spent(session, start, start + timedelta(1))))
    average = await _spent(session, now - timedelta(days=DAYS), now) / DAYS
    remaining = max(0, recorded - spent_since) if recorded is not None else None
    days_left = remaining / average if remaining is not None and average > 0 else None
    return Forecast(recorded, recorded_at, spent_since, remaining, days, average, days_left)
