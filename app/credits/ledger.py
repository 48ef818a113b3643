"""The ledger's moves (TigerBeetle's two-phase transfers, in Postgres or SQLite).

Every move is a transfer between two accounts, in the caller's transaction, and every
change of a balance is one guarded UPDATE: a user's available balance (credits posted -
debits posted - debits pending) is checked in the same statement that takes from it, and
a CHECK constraint refuses any row that would go below zero, so concurrent creates cannot
overdraw it whatever their interleaving. Holds are settled by the database (see
`app/jobs/money.py`).
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import CreditAccount, CreditTransfer
from app.db.session import upsert_insert
from app.jobs.live.events import notify_balance_changed
from app.kit.cursor import newest_first_page
from app.kit.errors import ProblemError


class TransferKind(StrEnum):
    GRANT = "grant"  # system:grants -> user
    TOPUP = "topup"  # system:topups -> user (a payment)
    HOLD = "hold"  # user -> system:revenue, pending until the job ends
    CHARGE = "charge"  # the hold posted (the job succeeded)
    RELEASE = "release"  # the hold voided (the job ended without a video)
    ADJUST = "adjust"  # user -> system:adjustments (an admin takes credits back)
    EXPIRE = "expire"  # user -> system:expired (a plan's monthly credits left at its end)


class TransferState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"


# the service's accounts (made by migration 0013)
GRANTS, TOPUPS = "system:grants", "system:topups"
REVENUE, ADJUSTMENTS = "system:revenue", "system:adjustments"
EXPIRED = "system:expired"  # migration 0015
SOURCES = {TransferKind.GRANT: GRANTS, TransferKind.TOPUP: TOPUPS}
SINKS = {TransferKind.ADJUST: ADJUSTMENTS, TransferKind.EXPIRE: EXPIRED}
MAX_AMOUNT = 10**12  # the most one grant, adjustment or top-up moves
AVAILABLE = (
    CreditAccount.credits_posted - CreditAccount.debits_posted - CreditAccount.debits_pending
)


async def user_account(session: AsyncSession, subject: str) -> str:
    """The id of `subject`'s account, made (empty) the first time."""
    await session.execute(
        upsert_insert(session, CreditAccount)
        .values(
            id=f"user:{uuid.uuid4().hex}",
            kind="user",
            subject=subject,
            credits_posted=0,
            debits_posted=0,
            debits_pending=0,
            updated_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=[CreditAccount.subject])
    )
    account = await session.scalar(select(CreditAccount.id).where(CreditAccount.subject == subject))
    assert account is not None
    return account


def insufficient(required: int, available: int) -> ProblemError:
    return ProblemError(
        402,
        "insufficient_credits",
        f"This needs {required} credits; {available} are available. Nothing was queued.",
        credits=(required, available),
    )


async def hold(
    session: AsyncSession,
    subject: str,
    holds: list[tuple[uuid.UUID, int]],
    *,
    fresh: ColumnElement[bool] | None = None,
) -> None:
    """Hold `amount` for each `(job_id, amount)`, all or none, in the caller's transaction:
    one guarded UPDATE of the user's account, then the holds (a user without an account has
    nothing to hold from). `fresh`: a further condition on the account (its monthly
    credits are this month's); when it fails the hold is refused like a short balance."""
    total = sum(amount for _, amount in holds)
    taken = (
        await session.execute(
            update(CreditAccount)
            .where(
                CreditAccount.subject == subject,
                AVAILABLE >= total,
                *([fresh] if fresh is not None else []),
            )
            .values(
                debits_pending=CreditAccount.debits_pending + total, updated_at=datetime.now(UTC)
            )
            .returning(CreditAccount.id, AVAILABLE)
        )
    ).first()
    if taken is None:
        available = await session.scalar(select(AVAILABLE).where(CreditAccount.subject == subject))
        raise insufficient(total, available or 0)
    account, available = taken
    now = datetime.now(UTC)
    for job_id, amount in holds:
        if amount == 0:
            continue  # nothing to hold (a free model in the cost table)
        session.add(
            CreditTransfer(
                id=uuid.uuid4(),
                idempotency_key=f"hold:{job_id}",
                kind=TransferKind.HOLD,
                debit_account=account,
                credit_account=REVENUE,
                amount=amount,
                state=TransferState.PENDING,
                job_id=job_id,
                user_account=account,
                balance_after=available,
                created_at=now,
            )
        )


async def balance_of(session: AsyncSession, account: str) -> int:
    return await session.scalar(select(AVAILABLE).where(CreditAccount.id == account)) or 0


async def post(
    session: AsyncSession,
    kind: TransferKind,
    account: str,
    amount: int,
    *,
    key: str | None,
    note: str | None,
    at: datetime,
) -> CreditTransfer | None:
    """One posted transfer between `account` (a user's) and the system account of `kind`,
    both balances moved in the caller's transaction. Into the user's for a grant or a
    top-up; out of it (an adjustment, an expiry) only if that much is available: None
    when not (nothing moved)."""
    incoming = kind in SOURCES
    system = SOURCES[kind] if incoming else SINKS[kind]
    user_change = (
        {"credits_posted": CreditAccount.credits_posted + amount}
        if incoming
        else {"debits_posted": CreditAccount.debits_posted + amount}
    )
    guard = [] if incoming else [AVAILABLE >= amount]
    after = await session.scalar(
        update(CreditAccount)
        .where(CreditAccount.id == account, *guard)
        .values(**user_change, updated_at=at)
        .returning(AVAILABLE)
    )
    if after is None:
        return None
    system_change = (
        {"debits_posted": CreditAccount.debits_posted + amount}
        if incoming
        else {"credits_posted": CreditAccount.credits_posted + amount}
    )
    await session.execute(
        update(CreditAccount)
        .where(CreditAccount.id == system)
        .values(**system_change, updated_at=at)
    )
    debit, credit = (system, account) if incoming else (account, system)
    transfer = CreditTransfer(
        id=uuid.uuid4(),
        idempotency_key=key,
        kind=kind,
        debit_account=debit,
        credit_account=credit,
        amount=amount,
        state=TransferState.POSTED,
        note=note,
        user_account=account,
        balance_after=after,
        created_at=at,
    )
    session.add(transfer)
    return transfer


async def transfer_in(
    session: AsyncSession,
    subject: str,
    kind: TransferKind,
    amount: int,
    key: str | None,
    note: str | None,
) -> tuple[CreditTransfer, bool]:
    """Credits into (a grant, a top-up) or, negative, out of (an adjustment) a user's
    account; a replayed `key` returns the first transfer and moves nothing. Commits.
    Returns (transfer, created); 409 `would_overdraw` for an adjustment past the balance."""
    idempotency_key = f"{kind}:{key}" if key is not None else None
    if idempotency_key is not None and (found := await _by_key(session, idempotency_key)):
        await session.commit()
        return found, False
    account = await user_account(session, subject)
    if amount < 0:
        kind, amount = TransferKind.ADJUST, -amount
    transfer = await post(
        session, kind, account, amount, key=idempotency_key, note=note, at=datetime.now(UTC)
    )
    if transfer is None:
        available = await balance_of(session, account)
        await session.rollback()
        raise ProblemError(
            409,
            "would_overdraw",
            f"Taking {amount} credits would leave less than nothing: {available} are "
            "available (held credits included in what is not).",
        )
    try:
        await session.flush()  # the key's unique index: a replay at the same moment waits here
        await notify_balance_changed(session, subject)
        await session.commit()
    except IntegrityError:  # the same key, replayed at the same moment: theirs stands
        await session.rollback()
        assert idempotency_key is not None
        found = await _by_key(session, idempotency_key)
        assert found is not None
        return found, False
    return transfer, True


async def _by_key(session: AsyncSession, key: str) -> CreditTransfer | None:
    return await session.scalar(select(CreditTransfer).where(CreditTransfer.idempotency_key == key))


@dataclass(frozen=True, slots=True)
class Balance:
    available: int
    held: int
    spent_this_month: int


async def balance(session: AsyncSession, subject: str) -> Balance:
    row = (
        await session.execute(
            select(CreditAccount.id, AVAILABLE, CreditAccount.debits_pending).where(
                CreditAccount.subject == subject
            )
        )
    ).one_or_none()
    if row is None:
        return Balance(0, 0, 0)
    account, available, held = row
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    spent = await session.scalar(
        select(func.coalesce(func.sum(CreditTransfer.amount), 0)).where(
            CreditTransfer.user_account == account,
            CreditTransfer.kind == TransferKind.CHARGE,
            CreditTransfer.created_at >= month,
        )
    )
    return Balance(available, held, spent or 0)


async def statement(
    session: AsyncSession, subject: str, *, limit: int, cursor: str | None
) -> tuple[list[CreditTransfer], str | None]:
    """A user's transfers, newest first."""
    account = await session.scalar(select(CreditAccount.id).where(CreditAccount.subject == subject))
    query = select(CreditTransfer).where(CreditTransfer.user_account == (account or ""))
    keys = (CreditTransfer.created_at, CreditTransfer.id)
    return await newest_first_page(session, query, keys, limit=limit, cursor=cursor)
