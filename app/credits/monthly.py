"""A plan's monthly credits: granted on the user's first use of the ledger in a month
(UTC), expiring at the month's end.

They are spent before any other credits: what expires is the month's grant less what the
holds made in that month took (a released hold gives its share back; one still pending
when the month is settled counts as spent), and never more than is available. The month
is settled lazily, in the transaction of the user's next hold or balance read, under the
account's row lock: the expiry and the new grant land at most once each (their keys are
unique), whichever replica gets there first.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits.ledger import AVAILABLE, TransferKind, TransferState, post, user_account
from app.db.models import CreditAccount, CreditTransfer
from app.jobs.live.events import notify_balance_changed


def period_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m")


def period_bounds(period: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    return start, (start + timedelta(days=32)).replace(day=1)


def is_settled(monthly_credits: int, at: datetime) -> ColumnElement[bool]:
    """The account needs no settling this month (as SQL, for the hold's guarded UPDATE):
    `_settled` on its row."""
    current = CreditAccount.period == period_of(at)
    if monthly_credits:
        return current
    return or_(current, CreditAccount.period_grant == 0)


def _settled(period: str | None, grant: int, monthly_credits: int, current: str) -> bool:
    """Its grant is this month's, or it has none to expire and its plan grants none."""
    return period == current or (grant == 0 and monthly_credits == 0)


@dataclass(frozen=True, slots=True)
class Expiring:
    amount: int
    at: datetime


async def expiring_of(session: AsyncSession, subject: str) -> list[Expiring]:
    account = await session.scalar(select(CreditAccount).where(CreditAccount.subject == subject))
    left = await expiring(session, account) if account is not None else None
    return [left] if left is not None else []


async def expiring(session: AsyncSession, account: CreditAccount) -> Expiring | None:
    """What is left of the account's monthly grant, and when it expires."""
    if account.period is None or account.period_grant == 0:
        return None
    start, end = period_bounds(account.period)
    spent = await session.scalar(
        select(func.coalesce(func.sum(CreditTransfer.amount), 0)).where(
            CreditTransfer.user_account == account.id,
            CreditTransfer.kind == TransferKind.HOLD,
            CreditTransfer.state != TransferState.VOIDED,
            and_(CreditTransfer.created_at >= start, CreditTransfer.created_at < end),
        )
    )
    available = await session.scalar(select(AVAILABLE).where(CreditAccount.id == account.id))
    left = max(0, min(account.period_grant - (spent or 0), available or 0))
    return Expiring(left, end) if left else None


async def settle(session: AsyncSession, subject: str, monthly_credits: int) -> bool:
    """Expire what is left of an earlier month's grant and make this month's, in the
    caller's transaction. True when anything changed."""
    now = datetime.now(UTC)
    current = period_of(now)
    seen = (
        await session.execute(
            select(CreditAccount.period, CreditAccount.period_grant).where(
                CreditAccount.subject == subject
            )
        )
    ).first()
    period, grant = seen if seen is not None else (None, 0)
    if _settled(period, grant, monthly_credits, current):
        return False  # the common case: read, nothing locked
    account_id = await user_account(session, subject)
    account = await session.get(
        CreditAccount, account_id, with_for_update=True, populate_existing=True
    )
    assert account is not None
    if _settled(account.period, account.period_grant, monthly_credits, current):
        return False  # settled meanwhile, under the lock we waited for
    if account.period is not None and (left := await expiring(session, account)):
        key = f"expire:{account.id}:{account.period}"
        note = f"the plan's credits of {account.period}, unspent"
        await post(
            session, TransferKind.EXPIRE, account.id, left.amount, key=key, note=note, at=now
        )
    if monthly_credits:
        key = f"monthly:{account.id}:{current}"
        note = f"the plan's credits of {current}"
        await post(
            session, TransferKind.GRANT, account.id, monthly_credits, key=key, note=note, at=now
        )
    account.period, account.period_grant = current, monthly_credits
    await session.flush()
    await notify_balance_changed(session, subject)
    return True
