"""The jobs domain's `Wallet` port, on the ledger: a create holds its jobs' costs."""

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import ledger
from app.db.models import Job
from app.jobs.states import CreditState


class LedgerWallet:
    async def hold(self, session: AsyncSession, owner: str, jobs: Sequence[Job]) -> None:
        await ledger.hold(session, owner, [(job.id, job.estimated_cost) for job in jobs])
        for job in jobs:
            job.credit_state = CreditState.HELD if job.estimated_cost else None
