"""What jobs ask of the credits ledger: hold each new job's estimated cost in the create's
transaction, or refuse it (402 `insufficient_credits`). The hold is settled by the
database itself when the job makes its last move (migration 0013's trigger), so no code
that moves a job has to remember the money. The credits domain implements the port;
`main` wires it (`NoLedger` while CREDITS_LEDGER is off)."""

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Job


class Wallet(Protocol):
    async def hold(self, session: AsyncSession, owner: str, jobs: Sequence[Job]) -> None:
        """Hold every job's `estimated_cost`, all or none (a `ProblemError` 402 naming what
        is required and what is available)."""
        ...


class NoLedger:
    """CREDITS_LEDGER off: the daily budget alone caps spending."""

    async def hold(self, session: AsyncSession, owner: str, jobs: Sequence[Job]) -> None:
        return None
