"""What the caller can still spend."""

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.deps import Reader, Session
from app.errors import problem_responses
from app.jobs import budget

router = APIRouter(prefix="/me", tags=["me"], responses=problem_responses(401, 429))


class UsageOut(BaseModel):
    spent_today: int = Field(
        description="credits committed today (UTC) by jobs that reach Seedance"
    )
    daily_budget: int
    remaining_today: int
    jobs_in_flight: int = Field(description="queued + running")
    max_jobs_in_flight: int
    resets_at: datetime


@router.get("/usage", response_model=UsageOut, summary="Your spend today and your limits")
async def get_usage(
    request: Request,
    principal: Reader,
    session: Session,
) -> UsageOut:
    settings = request.app.state.settings
    usage = await budget.usage(session, principal.subject)
    return UsageOut(
        spent_today=usage.spent_today,
        daily_budget=settings.user_daily_credit_budget,
        remaining_today=max(0, settings.user_daily_credit_budget - usage.spent_today),
        jobs_in_flight=usage.jobs_in_flight,
        max_jobs_in_flight=settings.user_max_jobs_in_flight,
        resets_at=usage.resets_at,
    )
