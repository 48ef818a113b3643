"""The jobs domain's `Wallet` port, on the ledger: a create holds its jobs' costs, after
settling the owner's monthly credits when a new month began."""

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import ledger, monthly
from app.db.models import Job
from app.identity.plans import Plans
from app.jobs.states import CreditState
from app.kit.errors import ProblemError


class LedgerWallet:
    def __init__(self, plans: Plans) -> None:
        self._plans = plans

    async def hold(self, session: AsyncSession, owner: str, jobs: Sequence[Job]) -> None:
        """One guarded UPDATE when the month is settled (the common case); otherwise the
        month is settled first and the hold tried again."""
        holds = [(job.id, job.estimated_cost) for job in jobs]
        grants = self._plans.in_force(jobs[0].plan).monthly_credits
        try:
            fresh = monthly.is_settled(grants, datetime.now(UTC))
            await ledger.hold(session, owner, holds, fresh=fresh)
        except ProblemError:
            if not await monthly.settle(session, owner, grants):
                raise
            await ledger.hold(session, owner, holds)
        for job in jobs:
            job.credit_state = CreditState.HELD if job.estimated_cost else None
