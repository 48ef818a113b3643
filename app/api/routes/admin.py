"""Operator views across all users (admin role in the JWT, or ADMIN_TOKEN)."""

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from app.api.auth import require_admin
from app.api.deps import Cursor, Session
from app.api.errors import problem_responses
from app.api.state import services
from app.jobs import service, stats
from app.jobs.schemas import JobOut
from app.jobs.states import JobStatus
from app.kit.fields import SINGLE_LINE, Rfc3339

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


class ErasureOut(BaseModel):
    subject: str
    jobs_deleted: int = Field(description="jobs turned into tombstones (cost kept)")
    prompts_removed: int
    media_objects_removed: int = Field(description="videos and posters removed from storage")
    media_pending_removal: int = Field(
        description="jobs whose objects could not be removed now; the media worker retries"
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
    return AdminJobPage(
        items=[services(request).media_links.job_out(job, AdminJobOut) for job in jobs],
        next_cursor=next_cursor,
    )


@router.get("/stats", response_model=StatsOut, summary="Fleet health and spend")
async def get_stats(
    session: Session,
    hours: Annotated[float, Query(gt=0, le=24 * 31, description="window, in hours")] = 24,
) -> StatsOut:
    since = datetime.now(UTC) - timedelta(hours=hours)
    return StatsOut.model_validate(await stats.compute(session, since), from_attributes=True)


@router.delete(
    "/users/{subject}/data",
    response_model=ErasureOut,
    summary="Erase one user's prompts, inputs and media (right to erasure)",
)
async def erase_user_data(
    subject: Annotated[str, Path(min_length=1, max_length=255, pattern=SINGLE_LINE)],
    session: Session,
    request: Request,
) -> ErasureOut:
    """Every job of the user becomes a tombstone (prompt and inputs removed, cost kept),
    and their stored videos and posters are removed now. Repeating it is harmless."""
    erasure = await service.erase_user(session, subject)
    removed = await services(request).purger.purge(erasure.job_ids)
    pending = await stats.media_pending_purge(session, subject)
    return ErasureOut(
        subject=subject,
        jobs_deleted=erasure.jobs,
        prompts_removed=erasure.prompts,
        media_objects_removed=removed,
        media_pending_removal=pending,
    )
