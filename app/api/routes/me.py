"""What the caller can still spend, and where they stand with moderation."""

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.deps import Reader, Session
from app.api.errors import problem_responses
from app.api.state import services
from app.jobs import budget
from app.moderation import standing
from app.moderation.schemas import StandingOut

router = APIRouter(prefix="/me", tags=["me"], responses=problem_responses(401, 429))


class PlanOut(BaseModel):
    name: str = Field(examples=["free"])
    rate_limit_create: str = Field(examples=["10/minute"])
    rate_limit_read: str = Field(examples=["300/minute"])
    max_jobs_in_flight: int
    daily_credit_budget: int
    models: list[str] = Field(description="the models the plan includes")
    resolutions: list[str]


class UsageOut(BaseModel):
    plan: PlanOut
    spent_today: int = Field(
        description="credits committed today (UTC) by jobs that reach Seedance"
    )
    daily_budget: int
    remaining_today: int
    jobs_in_flight: int = Field(description="queued + running")
    max_jobs_in_flight: int
    resets_at: datetime
    standing: StandingOut = Field(description="moderation: strikes, and any suspension")


@router.get(
    "/usage",
    response_model=UsageOut,
    summary="Your plan, your spend today, your limits, your standing",
)
async def get_usage(principal: Reader, session: Session, request: Request) -> UsageOut:
    plan = principal.plan
    usage = await budget.usage(session, principal.subject)
    settings = services(request).settings
    standing_now = await standing.standing(session, settings, principal.subject)
    return UsageOut(
        plan=PlanOut.model_validate(asdict(plan)),
        spent_today=usage.spent_today,
        daily_budget=plan.daily_credit_budget,
        remaining_today=max(0, plan.daily_credit_budget - usage.spent_today),
        jobs_in_flight=usage.jobs_in_flight,
        max_jobs_in_flight=plan.max_jobs_in_flight,
        resets_at=usage.resets_at,
        standing=StandingOut.model_validate(standing_now),
    )
