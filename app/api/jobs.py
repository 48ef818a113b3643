"""The /jobs API for browser and mobile clients."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.db.session import get_session
from app.errors import problem_responses
from app.jobs import service
from app.jobs.states import JobStatus
from app.ratelimit import RouteClass, per_user
from app.schemas import JobCreate, JobOut, JobPage

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=problem_responses(401, 422, 429))
Session = Annotated[AsyncSession, Depends(get_session)]
Creator = Annotated[Principal, per_user(RouteClass.CREATE)]
Reader = Annotated[Principal, per_user(RouteClass.READ)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retries with the same key return the original job instead of a new one.",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Create a video job",
    responses={
        200: {"model": JobOut, "description": "A retry with a known Idempotency-Key"},
        **problem_responses(402, 409),
    },
)
async def create_job(
    body: JobCreate,
    principal: Creator,
    session: Session,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Record the job as `queued` and return at once; the dispatcher hands it to Seedance.

    Refused before anything is recorded: invalid bodies (422), blocked prompts (422
    `prompt_blocked`), too many jobs in flight (429), the daily credit budget (402)."""
    settings = request.app.state.settings
    job, created = await service.create_job(
        session, settings, principal.subject, body, idempotency_key
    )
    if created:
        if request.app.state.dispatcher is not None:
            request.app.state.dispatcher.wake()
    else:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.model_validate(job)


@router.get("", response_model=JobPage, summary="List your jobs, newest first")
async def list_jobs(
    principal: Reader,
    session: Session,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> JobPage:
    filters = service.JobFilter(owner=principal.subject, status=job_status)
    jobs, next_cursor = await service.list_jobs(session, filters, limit=limit, cursor=cursor)
    return JobPage(items=[JobOut.model_validate(j) for j in jobs], next_cursor=next_cursor)


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="Read one of your jobs",
    responses=problem_responses(404),
)
async def get_job(job_id: uuid.UUID, principal: Reader, session: Session) -> JobOut:
    return JobOut.model_validate(await service.get_job(session, principal.subject, job_id))
