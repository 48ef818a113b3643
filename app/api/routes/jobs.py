"""The /jobs API for browser and mobile clients."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api.deps import Creator, Cursor, IdempotencyKey, Reader, Session
from app.api.errors import problem_responses
from app.api.state import services
from app.jobs import service
from app.jobs.schemas import BatchCreate, BatchOut, JobCreate, JobOut, JobPage, PromoteRequest
from app.jobs.states import JobStatus
from app.kit.loops import wake_if_running
from app.uploads.removal import release_unused

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=problem_responses(401, 422, 429))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Create a video job",
    responses={
        200: {"model": JobOut, "description": "A retry with a known Idempotency-Key"},
        **problem_responses(400, 402, 403, 409, 410, 503),
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

    Refused before anything is recorded: invalid bodies (422), content the policy does not
    allow (422 `content_policy`, naming each field), a suspended account (403
    `account_suspended`), moderation unavailable (503 `moderation_unavailable`), too many
    jobs in flight (429), too few credits (402 `insufficient_credits`, with the credits
    ledger on) or the daily credit budget (402 `budget_exceeded`); 410 `subject_erased`
    when the account was erased while the request was under way."""
    built = services(request)
    job, created = await service.create_job(
        session,
        built.settings,
        built.checks,
        principal.subject,
        principal.plan,
        body,
        idempotency_key,
    )
    _accepted(request, response, created, location=f"/jobs/{job.id}")
    return (await services(request).present([job]))[0]


def _accepted(request: Request, response: Response, created: bool, *, location: str) -> None:
    """202 and a dispatcher nudge for new work, 200 for an idempotent replay; Location."""
    if created:
        wake_if_running(services(request).dispatcher)
    else:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = location


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchOut,
    summary="Create 2 to 8 prompt variants at once",
    responses={
        200: {"model": BatchOut, "description": "A retry with a known Idempotency-Key"},
        **problem_responses(400, 402, 403, 409, 410, 503),
    },
)
async def create_batch(
    body: BatchCreate,
    principal: Creator,
    session: Session,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BatchOut:
    """All variants are recorded under one batch, or none is: one invalid variant, one
    the content policy does not allow (422 `content_policy` naming `jobs[i].prompt`) or a
    budget the whole batch would pass refuses the request."""
    batch, jobs, created = await service.create_batch(
        session,
        services(request).settings,
        services(request).checks,
        principal.subject,
        principal.plan,
        body,
        idempotency_key,
    )
    _accepted(request, response, created, location=f"/batches/{batch.id}")
    return BatchOut.of(batch, await services(request).present(jobs))


@router.get("", response_model=JobPage, summary="List your jobs, newest first")
async def list_jobs(
    principal: Reader,
    session: Session,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Cursor = None,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> JobPage:
    filters = service.JobFilter(owner=principal.subject, status=job_status)
    jobs, next_cursor = await service.list_jobs(session, filters, limit=limit, cursor=cursor)
    return JobPage(items=await services(request).present(jobs), next_cursor=next_cursor)


@router.get(
    "/{job_id:uuid}",
    response_model=JobOut,
    summary="Read one of your jobs",
    responses=problem_responses(404),
)
async def get_job(job_id: uuid.UUID, principal: Reader, request: Request) -> JobOut:
    state = services(request)
    return (await state.present([await service.read_job(state.engine, principal.subject, job_id)]))[
        0
    ]


@router.post(
    "/{job_id:uuid}/promote",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Render a succeeded Mini job again on seedance-2.0",
    responses={
        200: {"model": JobOut, "description": "A retry with a known Idempotency-Key"},
        **problem_responses(400, 402, 403, 404, 409, 410, 503),
    },
)
async def promote_job(
    job_id: uuid.UUID,
    principal: Creator,
    session: Session,
    request: Request,
    response: Response,
    body: PromoteRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Same prompt and inputs, a standard duration (5, 10, 15) and resolution; the new job's
    `source_job_id` names the Mini job. Anything but a succeeded Mini job is a 409."""
    job, created = await service.promote_job(
        session,
        services(request).settings,
        services(request).checks,
        principal.subject,
        principal.plan,
        job_id,
        body or PromoteRequest(),
        idempotency_key,
    )
    _accepted(request, response, created, location=f"/jobs/{job.id}")
    return (await services(request).present([job]))[0]


@router.post(
    "/{job_id:uuid}/cancel",
    response_model=JobOut,
    summary="Cancel a job that has not been sent to Seedance",
    responses=problem_responses(404, 409),
)
async def cancel_job(
    job_id: uuid.UUID, principal: Creator, session: Session, request: Request
) -> JobOut:
    """A queued job becomes `canceled` and is never submitted (canceling twice is fine).
    Once Seedance has the job it cannot be canceled: 409 `not_cancelable`."""
    job = await service.cancel_job(session, principal.subject, job_id)
    return (await services(request).present([job]))[0]


@router.delete(
    "/{job_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a job: its video, poster, prompt and inputs (uploads included)",
    responses=problem_responses(404),
)
async def delete_job(
    job_id: uuid.UUID, principal: Creator, session: Session, request: Request
) -> Response:
    """The stored media is removed (its signed URLs stop working), the prompt and inputs
    are forgotten, and the job disappears from your reads; a record of its cost stays for
    accounting. A job Seedance is still rendering is deleted now and stores nothing when
    it finishes; one not yet sent is canceled. The uploads it used go too, unless another
    job of yours uses them. Deleting again is a 204 too."""
    deleted = await service.delete_job(session, principal.subject, job_id)
    if deleted is not None:
        state = services(request)
        await state.purger.purge([deleted.id])  # the rest is retried by the worker
        released = await release_unused(session, [deleted.id])
        await session.commit()
        await state.upload_remover.remove(released)  # the rest is retried by the sweep
    return Response(status_code=status.HTTP_204_NO_CONTENT)
