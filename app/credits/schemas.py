"""The credits API's bodies."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from app.credits.ledger import MAX_AMOUNT, TransferKind
from app.db.models import CreditTransfer
from app.kit.fields import SINGLE_LINE, WholeNumber


def _moves_something(amount: int) -> int:
    if amount == 0:
        raise PydanticCustomError("zero_amount", "an amount of 0 moves nothing")
    return amount


class CreditsGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Annotated[WholeNumber, AfterValidator(_moves_something)] = Field(
        ge=-MAX_AMOUNT,
        le=MAX_AMOUNT,
        json_schema_extra={"not": {"const": 0}},
        description="credits given; negative: taken back (an adjustment, refused with 409 "
        "when it would leave less than nothing); never 0",
    )
    reason: Annotated[str, Field(min_length=1, max_length=255, pattern=SINGLE_LINE)]


# how each kind changes what the user can spend
_AVAILABLE_CHANGE = {
    TransferKind.GRANT: 1,
    TransferKind.TOPUP: 1,
    TransferKind.HOLD: -1,
    TransferKind.CHARGE: 0,  # already held
    TransferKind.RELEASE: 1,
    TransferKind.ADJUST: -1,
    TransferKind.EXPIRE: -1,
}


class TransferOut(BaseModel):
    id: uuid.UUID
    kind: TransferKind
    amount: int = Field(ge=0)
    available_change: int = Field(
        description="what it did to the available balance (a charge: nothing, it was held)"
    )
    balance_after: int | None = Field(description="the available balance right after it")
    job_id: uuid.UUID | None
    state: str = Field(description="a hold: pending, posted (charged) or voided (released)")
    note: str | None
    at: datetime

    @classmethod
    def of(cls, transfer: CreditTransfer) -> "TransferOut":
        kind = TransferKind(transfer.kind)
        return cls(
            id=transfer.id,
            kind=kind,
            amount=transfer.amount,
            available_change=_AVAILABLE_CHANGE[kind] * transfer.amount,
            balance_after=transfer.balance_after,
            job_id=transfer.job_id,
            state=transfer.state,
            note=transfer.note,
            at=transfer.created_at,
        )


class TransferPage(BaseModel):
    items: list[TransferOut]
    next_cursor: str | None


class ExpiringOut(BaseModel):
    amount: int = Field(gt=0, description="credits that lapse unless spent first")
    at: datetime = Field(description="when (the end of the month of your plan's grant, UTC)")


class BalanceOut(BaseModel):
    available: int = Field(description="what new jobs can hold (expiring credits included)")
    held: int = Field(description="held by jobs still running")
    spent_this_month: int = Field(description="charged since the 1st (UTC)")


class CreditsOut(BalanceOut):
    expiring: list[ExpiringOut] = Field(
        default_factory=list,
        description="your plan's monthly credits left, spent before any others; empty when "
        "none (grants and top-ups do not expire)",
    )
