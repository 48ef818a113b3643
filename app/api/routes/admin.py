"""Operator views across all users (admin role in the JWT, or ADMIN_TOKEN)."""

import uuid
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import require_admin
from app.api.deps import Cursor, Session
from app.api.errors import problem_responses
from app.api.state import services
from app.config import QueuePolicy
from app.identity.plans import Plans
from app.jobs import account_forecast, scheduler, service, stats
from app.jobs.scheduler import PauseReason
from app.jobs.schemas import JobOut
from app.jobs.states import JobStatus
from app.kit.fields import SINGLE_LINE, Rfc3339, WholeNumber

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403, 422),
)


class AdminJobOut(JobOut):
    owner: str
    upstream_task_id: str | None
    resolved_by: str | None = Field(
        description="webhook or reconciler: how the outcome was learned"
    )
    submit_attempts: int
    status_polls: int
    media_status: str | None = Field(
        description="pending, stored, failed, purging or purged (app/jobs/states.py)"
    )
    media_attempts: int
    media_error: str | None
    deleted_at: datetime | None


class AdminJobPage(BaseModel):
    items: list[AdminJobOut]
    next_cursor: str | None


class DaySpendOut(BaseModel):
    day: date
    credits: int = Field(description="estimated cost of the jobs Seedance accepted that day")


class AccountOutlookOut(BaseModel):
    recorded_credits: int | None = Field(description="POST /admin/account/credits (null: never)")
    recorded_at: datetime | None
    spent_since_recorded: int
    remaining: int | None = Field(description="recorded less spent since (never below 0)")
    spend_by_day: list[DaySpendOut] = Field(description="the last 7 days (UTC), today last")
    daily_average: float = Field(description="over the last 7 x 24 hours")
    days_left: float | None = Field(
        description="remaining / daily_average (null: nothing recorded or nothing spent); "
        "the metric seedance_upstream_account_days_left says the same"
    )


class StatsOut(BaseModel):
    since: datetime
    jobs_by_status: dict[str, int]
    success_rate: float | None = Field(description="succeeded / (succeeded + failed)")
    median_seconds_to_success: float | None
    p95_seconds_to_success: float | None
    credits_spent_today: int = Field(description="all users, since 00:00 UTC")
    resolved_by: dict[str, int]
    callback_ratio: float | None = Field(description="outcomes learned by webhook / all learned")
    media_mismatches: int = Field(
        description="stored videos that differ from what was asked (resolution, shape, length)"
    )
    median_seconds_in_queue: float | None = Field(
        description="from creation to Seedance accepting the job, over the jobs it accepted"
    )
    p95_seconds_in_queue: float | None
    upstream_account: AccountOutlookOut = Field(
        description="the Seedance account's credits: what an operator recorded, what "
        "Seedance took since, and how long the rest lasts at the last 7 days' spend"
    )


class AccountCreditsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credits: WholeNumber = Field(
        ge=0, le=10**15, description="the balance Seedance's console shows now"
    )


class ErasureOut(BaseModel):
    subject: str
    jobs_deleted: int = Field(description="jobs turned into tombstones (cost kept)")
    prompts_removed: int
    media_objects_removed: int = Field(description="videos and posters removed from storage")
    media_pending_removal: int = Field(
        description="jobs whose objects could not be removed now; the media worker retries"
    )
    uploads_removed: int = Field(description="the user's uploaded files removed from storage")
    uploads_pending_removal: int = Field(
        description="uploads whose files could not be removed now; the upload sweep retries"
    )


@router.get("/jobs", response_model=AdminJobPage, summary="Search all users' jobs")
async def search_jobs(
    session: Session,
    request: Request,
    owner: Annotated[str | None, Query(max_length=255, pattern=SINGLE_LINE, alias="user")] = None,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
    created_after: Rfc3339 | None = None,
    created_before: Rfc3339 | None = None,
    upstream_task_id: Annotated[str | None, Query(max_length=128, pattern=SINGLE_LINE)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Cursor = None,
) -> AdminJobPage:
    filters = service.JobFilter(
        owner=owner,
        include_deleted=True,
        status=job_status,
        created_after=created_after,
        created_before=created_before,
        upstream_task_id=upstream_task_id,
    )
    jobs, next_cursor = await service.list_jobs(session, filters, limit=limit, cursor=cursor)
    items = await services(request).present(jobs, AdminJobOut)
    return AdminJobPage(items=items, next_cursor=next_cursor)


@router.get("/stats", response_model=StatsOut, summary="Fleet health and spend")
async def get_stats(
    session: Session,
    hours: Annotated[float, Query(gt=0, le=24 * 31, description="window, in hours")] = 24,
) -> StatsOut:
    since = datetime.now(UTC) - timedelta(hours=hours)
    computed = await stats.compute(session, since)
    outlook = await account_forecast.forecast(session)
    return StatsOut(
        **asdict(computed),
        upstream_account=AccountOutlookOut.model_validate(outlook, from_attributes=True),
    )


@router.post(
    "/account/credits",
    status_code=201,
    response_model=AccountOutlookOut,
    summary="Record the Seedance account's balance (forecasts start from it)",
    responses=problem_responses(400),
)
async def record_account_credits(body: AccountCreditsIn, session: Session) -> AccountOutlookOut:
    """Seedance has no balance endpoint: an operator copies the figure from its console
    (after a top-up, say). The answer is the outlook from it, as /admin/stats shows it."""
    await scheduler.record_account_credits(session, body.credits, datetime.now(UTC))
    await session.commit()
    return AccountOutlookOut.model_validate(
        await account_forecast.forecast(session), from_attributes=True
    )


class QueuedJobOut(BaseModel):
    position: int = Field(ge=0, description="jobs the scheduler would send before this one")
    job_id: uuid.UUID
    owner: str
    plan: str | None
    created_at: datetime


class QueueOwnerOut(BaseModel):
    owner: str
    waiting: int = Field(description="jobs waiting for a slot")
    upstream: int = Field(description="slots of the account it holds (submitting or rendering)")


class PauseOut(BaseModel):
    reason: PauseReason = Field(
        description="upstream_out_of_credits (Seedance's 402) or upstream_key_rejected (401/403)"
    )
    since: datetime


class QueueOut(BaseModel):
    policy: QueuePolicy
    paused: PauseOut | None = Field(
        description="dispatch paused for everyone: the account cannot work; a probe every "
        "ACCOUNT_PROBE_SECONDS resumes it (null: running)"
    )
    cap: int | None = Field(
        description="the account's concurrency the scheduler keeps to now: "
        "SEEDANCE_MAX_CONCURRENT_TASKS or what its 429s taught, the lower (null: none known)"
    )
    learned_cap: int | None
    probe_at: datetime | None = Field(description="from then one job may go above a learned cap")
    in_use: int = Field(description="slots held now: jobs being submitted or rendering")
    waiting: int
    order: list[QueuedJobOut] = Field(description="the first `limit` jobs, in the order sent")
    owners: list[QueueOwnerOut] = Field(description="owners waiting or holding slots")


@router.get("/queue", response_model=QueueOut, summary="The queue, in the order it goes")
async def get_queue(
    session: Session,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> QueueOut:
    settings = services(request).settings
    # each owner's first `limit` waiting jobs place the first `limit` of the order exactly
    view = await scheduler.queue_order(session, settings, Plans(settings), limit)
    waiting, _ = await scheduler.waiting_by(session, "owner")
    learned = await scheduler.learned_capacity(session)
    pause = scheduler.pause_of(learned)
    owners = sorted(set(waiting) | set(view.held))
    return QueueOut(
        policy=settings.queue_policy,
        paused=PauseOut.model_validate(pause, from_attributes=True) if pause else None,
        cap=view.account.cap,
        learned_cap=learned.learned_cap if learned else None,
        probe_at=learned.probe_at if learned else None,
        in_use=view.account.in_use,
        waiting=sum(waiting.values()),
        order=[
            QueuedJobOut(
                position=position,
                job_id=job.id,
                owner=job.owner,
                plan=job.plan,
                created_at=job.created_at,
            )
            for position, job in enumerate(islice(view.order(), limit))
        ],
        owners=[
            QueueOwnerOut(owner=o, waiting=waiting.get(o, 0), upstream=view.held.get(o, 0))
            for o in owners
        ],
    )


@router.delete(
    "/users/{subject:path}/data",
    response_model=ErasureOut,
    summary="Erase one user's prompts, inputs and media (right to erasure)",
)
async def erase_user_data(
    subject: Annotated[str, Path(min_length=1, max_length=255, pattern=SINGLE_LINE)],
    session: Session,
    request: Request,
) -> ErasureOut:
    """Every job of the user becomes a tombstone (prompt, inputs, idempotency keys and any
    text quoting them removed, cost kept), their stored videos and posters are removed now,
    the webhook messages about their jobs go, their API keys are revoked, their uploads
    (files and records) are removed, and what is kept
    names a pseudonym instead of the subject. A subject may hold `/` (`tenant/alice`), as
    is or percent-encoded. Repeating it is harmless."""
    report = await services(request).erasure.erase(session, subject)
    media_removed, media_pending = report.files["media"]
    uploads_removed, uploads_pending = report.files["uploads"]
    return ErasureOut(
        subject=subject,
        jobs_deleted=report.erasure.jobs,
        prompts_removed=report.erasure.prompts,
        media_objects_removed=media_removed,
        media_pending_removal=media_pending,
        uploads_removed=uploads_removed,
        uploads_pending_removal=uploads_pending,
    )
