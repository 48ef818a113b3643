"""Credits: the caller's balance and statement, and admins' grants and adjustments."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import JSONResponse

from app.api.auth import require_admin
from app.api.deps import Cursor, IdempotencyKey, Reader, Session
from app.api.errors import problem_responses
from app.api.state import services
from app.credits import ledger, monthly
from app.credits.schemas import (
    CreditsGrant,
    CreditsOut,
    ExpiringOut,
    TransferOut,
    TransferPage,
)
from app.kit.fields import SINGLE_LINE

router = APIRouter(tags=["credits"], responses=problem_responses(401, 422, 429))


@router.get("/me/credits", response_model=CreditsOut, summary="Your credits")
async def get_my_credits(principal: Reader, session: Session, request: Request) -> CreditsOut:
    """Your plan's credits of this month are granted on your first use of them (what was
    left of last month's expires then)."""
    if services(request).settings.credits_ledger:
        await monthly.settle(session, principal.subject, principal.plan.monthly_credits)
        await session.commit()
    found = await ledger.balance(session, principal.subject)
    return CreditsOut(
        available=found.available,
        held=found.held,
        spent_this_month=found.spent_this_month,
        expiring=[
            ExpiringOut(amount=e.amount, at=e.at)
            for e in await monthly.expiring_of(session, principal.subject)
        ],
    )


@router.get(
    "/me/credits/transactions",
    response_model=TransferPage,
    summary="Your credits' movements, newest first",
)
async def list_my_transactions(
    principal: Reader,
    session: Session,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Cursor = None,
) -> TransferPage:
    rows, next_cursor = await ledger.statement(
        session, principal.subject, limit=limit, cursor=cursor
    )
    return TransferPage(items=[TransferOut.of(t) for t in rows], next_cursor=next_cursor)


@router.post(
    "/admin/users/{subject:path}/credits",
    status_code=status.HTTP_201_CREATED,
    response_model=TransferOut,
    summary="Grant a user credits, or take some back (admins)",
    tags=["admin: credits"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(400, 403, 404, 409),
)
async def grant_credits(
    subject: Annotated[str, Path(min_length=1, max_length=255, pattern=SINGLE_LINE)],
    body: CreditsGrant,
    session: Session,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """With an `Idempotency-Key`, a replay answers the first transfer again (201) and moves
    nothing. A negative amount is an adjustment, 409 `would_overdraw` past the balance. (A
    path that is not one line of text names no user: 404.)"""
    transfer, _ = await ledger.transfer_in(
        session, subject, ledger.TransferKind.GRANT, body.amount, idempotency_key, body.reason
    )
    return JSONResponse(TransferOut.of(transfer).model_dump(mode="json"), status_code=201)
