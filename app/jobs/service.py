"""Job use cases: create (idempotently), read, list, and apply what Seedance reports.

Routers, the dispatcher and the reconciler call these; none of them touch `Request`.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import SimpleNamespace

from sqlalchemy import ColumnElement, Update, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.models import Batch, Job
from app.db.one_row import OneRowStatement
from app.errors import ProblemError
from app.identity.plans import PlanLimits
from app.jobs import budget, policy
from app.jobs.cursor import newest_first_page
from app.jobs.states import (
    TASK_FAILED,
    EventSource,
    JobStatus,
    awaiting_own_report,
    fail_running,
    is_terminal,
    move,
    record_creation,
)
from app.media.links import MediaLinks
from app.media.states import MediaStatus
from app.schemas import (
    AspectRatio,
    BatchCreate,
    JobCreate,
    JobOut,
    PromoteRequest,
    SeedanceModel,
)
from app.seedance.client import SeedanceClient, SeedanceError, TaskReport, TaskState

logger = logging.getLogger(__name__)


def estimate_cost(settings: Settings, body: JobCreate) -> int:
    """Credits a job is expected to cost, from the operator's per-second cost table."""
    return settings.cost_per_second[body.model][body.resolution] * body.duration


def job_not_found() -> ProblemError:
    return ProblemError(404, "job_not_found", "No such job.")


def _new_job(
    settings: Settings,
    owner: str,
    body: JobCreate,
    *,
    idempotency_key: str | None = None,
    batch_id: uuid.UUID | None = None,
    source_job_id: uuid.UUID | None = None,
) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=uuid.uuid4(),
        owner=owner,
        model=body.model,
        prompt=body.prompt,
        duration=body.duration,
        resolution=body.resolution,
        aspect_ratio=body.aspect_ratio,
        images=body.images or [],
        reference_video_urls=body.reference_video_urls or [],
        reference_audio_urls=body.reference_audio_urls or [],
        estimated_cost=estimate_cost(settings, body),
        idempotency_key=idempotency_key,
        request_fingerprint=body.fingerprint() if idempotency_key else None,
        batch_id=batch_id,
        source_job_id=source_job_id,
        status=JobStatus.QUEUED,
        created_at=now,
        updated_at=now,
    )


async def _record(session: AsyncSession, jobs: list[Job]) -> None:
    for job in jobs:
        session.add(job)
        record_creation(session, job)
    await session.commit()


async def create_job(
    session: AsyncSession,
    settings: Settings,
    owner: str,
    plan: PlanLimits,
    body: JobCreate,
    idempotency_key: str | None,
    *,
    source_job_id: uuid.UUID | None = None,
) -> tuple[Job, bool]:
    """Record a queued job; returns (job, created). A repeated Idempotency-Key returns the
    original job when the body matches and raises 409 when it does not. Content policy,
    the user's plan and budgets are checked before anything is recorded."""
    policy.check_prompt(settings, body.prompt)
    plan.check(body.model, body.resolution, model_field="model", resolution_field="resolution")
    await budget.lock_owner(session, owner)  # one create at a time per user, until commit
    if idempotency_key is not None:
        existing = await session.scalar(
            select(Job).where(Job.owner == owner, Job.idempotency_key == idempotency_key)
        )
        if existing is not None:
            await session.commit()  # nothing written; releases the lock, keeps `existing` loaded
            _check_replay(existing.request_fingerprint, body.fingerprint())
            return existing, False
    job = _new_job(
        settings, owner, body, idempotency_key=idempotency_key, source_job_id=source_job_id
    )
    await budget.enforce(session, plan, owner, cost=job.estimated_cost)
    await _record(session, [job])
    return job, True


async def create_batch(
    session: AsyncSession,
    settings: Settings,
    owner: str,
    plan: PlanLimits,
    body: BatchCreate,
    idempotency_key: str | None,
) -> tuple[Batch, list[Job], bool]:
    """Record all variants under one batch, or none of them (policy, plan and budgets are
    checked for the whole batch first)."""
    variants = body.variants()
    for index, variant in enumerate(variants):
        policy.check_prompt(settings, variant.prompt, field=body.prompt_field(index))
        plan.check(
            variant.model,
            variant.resolution,
            model_field=body.field(index, "model"),
            resolution_field=body.field(index, "resolution"),
        )
    fingerprint = body.fingerprint()
    await budget.lock_owner(session, owner)
    if idempotency_key is not None:
        existing = await session.scalar(
            select(Batch).where(Batch.owner == owner, Batch.idempotency_key == idempotency_key)
        )
        if existing is not None:
            jobs = await batch_jobs(session, existing.id)
            await session.commit()
            _check_replay(existing.request_fingerprint, fingerprint)
            return existing, jobs, False
    batch = Batch(
        id=uuid.uuid4(),
        owner=owner,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint if idempotency_key else None,
        created_at=datetime.now(UTC),
    )
    jobs = [_new_job(settings, owner, variant, batch_id=batch.id) for variant in variants]
    await budget.enforce(
        session, plan, owner, cost=sum(j.estimated_cost for j in jobs), jobs=len(jobs)
    )
    session.add(batch)
    await session.flush()  # the batch row before the jobs that point at it
    await _record(session, jobs)
    return batch, jobs, True


async def batch_jobs(session: AsyncSession, batch_id: uuid.UUID) -> list[Job]:
    # created in one transaction: same created_at, so the id keeps a stable order
    return list(
        await session.scalars(
            select(Job).where(Job.batch_id == batch_id).order_by(Job.created_at, Job.id)
        )
    )


async def get_batch(
    session: AsyncSession, owner: str, batch_id: uuid.UUID
) -> tuple[Batch, list[Job]]:
    batch = await session.scalar(select(Batch).where(Batch.id == batch_id, Batch.owner == owner))
    if batch is None:
        raise ProblemError(404, "batch_not_found", "No such batch.")
    return batch, await batch_jobs(session, batch_id)


async def promote_job(
    session: AsyncSession,
    settings: Settings,
    owner: str,
    plan: PlanLimits,
    job_id: uuid.UUID,
    body: PromoteRequest,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """A seedance-2.0 render of a succeeded Mini job: same prompt and inputs, a standard
    duration and resolution; the new job links to its source."""
    source = await get_job(session, owner, job_id)
    if source.model != SeedanceModel.MINI or source.status != JobStatus.SUCCEEDED:
        raise ProblemError(
            409,
            "not_promotable",
            f"Only succeeded {SeedanceModel.MINI.value} jobs can be promoted; "
            f"this one is a {source.model} job that is {source.status}.",
        )
    render = JobCreate(
        model=SeedanceModel.STANDARD,
        prompt=source.prompt,
        images=source.images or None,
        reference_video_urls=source.reference_video_urls or None,
        reference_audio_urls=source.reference_audio_urls or None,
        aspect_ratio=AspectRatio(source.aspect_ratio),
        duration=body.duration,
        resolution=body.resolution,
    )
    return await create_job(
        session, settings, owner, plan, render, idempotency_key, source_job_id=source.id
    )


async def cancel_job(session: AsyncSession, owner: str, job_id: uuid.UUID) -> Job:
    """A queued job that the dispatcher has not claimed becomes `canceled` and is never
    submitted. The row lock orders this against the dispatcher's claim."""
    job = await session.scalar(
        select(Job).where(*_OWNED).with_for_update(), {"job_id": job_id, "owner": owner}
    )
    if job is None:
        raise job_not_found()
    if job.status == JobStatus.CANCELED:
        await session.commit()
        return job  # canceling twice is fine
    if job.status != JobStatus.QUEUED or job.submit_started_at is not None:
        await session.commit()
        raise ProblemError(
            409,
            "not_cancelable",
            "The job has already been sent to Seedance, which cannot cancel it.",
        )
    move(session, job, JobStatus.CANCELED, EventSource.API, detail="canceled by its owner")
    await session.commit()
    return job


PURGE_HANDOFF = timedelta(minutes=1)


def _tombstone(session: AsyncSession, job: Job, source: EventSource, detail: str) -> None:
    """Forget what the user gave and what we made: the prompt and inputs go now, stored media
    is handed to the media worker's purge, a job not yet sent is canceled; the row stays,
    with its cost, for accounting. A job Seedance is still working on ends when it reports
    (the media worker then stores nothing)."""
    now = datetime.now(UTC)
    job.deleted_at = now
    job.prompt = None
    job.request_fingerprint = None  # a digest of the prompt is the prompt, to a guesser
    job.images = []
    job.reference_video_urls = []
    job.reference_audio_urls = []
    job.upstream_video_url = None
    if job.media_status == MediaStatus.STORED:
        job.media_status = MediaStatus.PURGING
        # the deleting request removes the objects itself; the worker's purge takes over
        # only if it could not
        job.media_next_attempt_at = now + PURGE_HANDOFF
    if job.status == JobStatus.QUEUED and job.submit_started_at is None:
        move(session, job, JobStatus.CANCELED, source, detail=detail)


async def delete_job(session: AsyncSession, owner: str, job_id: uuid.UUID) -> Job | None:
    """The owner deletes a job; deleting it again is fine (None: it was already deleted)."""
    job = await session.scalar(
        select(Job).where(Job.id == job_id, Job.owner == owner).with_for_update()
    )
    if job is None:
        raise job_not_found()
    if job.deleted_at is not None:
        await session.commit()
        return None
    _tombstone(session, job, EventSource.API, "deleted by its owner")
    await session.commit()
    return job


@dataclass(frozen=True, slots=True)
class Erasure:
    jobs: int  # jobs of the user that were not deleted yet
    prompts: int  # of them, those that had a prompt
    job_ids: list[uuid.UUID]


ERASE_BATCH = 500


async def erase_user(session: AsyncSession, owner: str) -> Erasure:
    """Right to erasure: every job of `owner` becomes a tombstone (see `_tombstone`)."""
    jobs = prompts = 0
    job_ids: list[uuid.UUID] = []
    while True:
        batch = list(
            await session.scalars(
                select(Job)
                .where(Job.owner == owner, Job.deleted_at.is_(None))
                .limit(ERASE_BATCH)
                .with_for_update()
            )
        )
        for job in batch:
            prompts += job.prompt is not None
            job_ids.append(job.id)
            _tombstone(session, job, EventSource.API, "erased at the user's request")
        await session.commit()
        jobs += len(batch)
        if len(batch) < ERASE_BATCH:
            break
    # a batch's fingerprint digests its prompts
    await session.execute(
        update(Batch).where(Batch.owner == owner).values(request_fingerprint=None)
    )
    await session.commit()
    return Erasure(jobs=jobs, prompts=prompts, job_ids=job_ids)


def _check_replay(original_fingerprint: str | None, fingerprint: str) -> None:
    if original_fingerprint != fingerprint:
        raise ProblemError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request body.",
        )


# built once: a job by id for its owner (GET on the driver path; SSE open and promote
# through the session)
_OWNED = (
    Job.id == bindparam("job_id"),
    Job.owner == bindparam("owner"),
    Job.deleted_at.is_(None),
)
_OWNED_JOB = select(Job).where(*_OWNED)
_OWNED_JOB_ROW = OneRowStatement(select(Job.__table__).where(*_OWNED))


async def get_job(session: AsyncSession, owner: str, job_id: uuid.UUID) -> Job:
    """The owner's job; someone else's job is reported exactly like a missing one."""
    job = await session.scalar(_OWNED_JOB, {"job_id": job_id, "owner": owner})
    if job is None:
        raise job_not_found()
    return job


async def read_job(engine: AsyncEngine, links: MediaLinks, owner: str, job_id: uuid.UUID) -> JobOut:
    """The owner's job, to show: read in one round trip on the driver connection
    (`OneRowStatement`), with no session, since nothing is changed."""
    row = await _OWNED_JOB_ROW.first(engine, job_id=job_id, owner=owner)
    if row is None:
        raise job_not_found()
    return links.job_out(SimpleNamespace(**row))


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What a job list is narrowed to. Client lists always set `owner`."""

    owner: str | None = None
    include_deleted: bool = False
    status: JobStatus | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    upstream_task_id: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.owner is not None:
            conditions.append(Job.owner == self.owner)
        if not self.include_deleted:
            conditions.append(Job.deleted_at.is_(None))
        if self.status is not None:
            conditions.append(Job.status == self.status)
        if self.created_after is not None:
            conditions.append(Job.created_at >= self.created_after)
        if self.created_before is not None:
            conditions.append(Job.created_at < self.created_before)
        if self.upstream_task_id is not None:
            conditions.append(Job.upstream_task_id == self.upstream_task_id)
        return conditions


async def list_jobs(
    session: AsyncSession, filters: JobFilter, *, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """One page of jobs, newest first, and the cursor of the next page."""
    query = select(Job).where(*filters.where())
    keys = (Job.created_at, Job.id)
    return await newest_first_page(session, query, keys, limit=limit, cursor=cursor)


class ApplyResult(StrEnum):
    APPLIED = "applied"  # the job moved
    UNCHANGED = "unchanged"  # still in progress upstream, nothing to record
    IGNORED = "ignored"  # the job is already terminal: duplicate, late or out of order


class TaskMismatch(Exception):
    """The report names a task that is not this job's."""


async def handle_callback(
    session: AsyncSession,
    settings: Settings,
    client: SeedanceClient,
    job_id: uuid.UUID,
    report: TaskReport,
) -> ApplyResult:
    """A verified callback for one of our jobs: applied at once, under the row lock. A
    SUCCESS is first confirmed with one status call when CONFIRM_SUCCESS_WITH_STATUS is on."""
    if report.state is TaskState.SUCCEEDED and settings.confirm_success_with_status:
        return await _confirm_then_apply(session, settings, client, job_id, report)
    return await _apply_callback(session, settings, job_id, report)


async def _apply_callback(
    session: AsyncSession, settings: Settings, job_id: uuid.UUID, report: TaskReport
) -> ApplyResult:
    try:
        return await apply_report(session, settings, job_id, report, EventSource.WEBHOOK)
    except LookupError as exc:
        raise job_not_found() from exc


async def _confirm_then_apply(
    session: AsyncSession,
    settings: Settings,
    client: SeedanceClient,
    job_id: uuid.UUID,
    report: TaskReport,
) -> ApplyResult:
    """Checked cheaply first, so a duplicate or late callback costs no status call; no
    transaction stays open across the upstream call. If the status call fails, the job is
    left for the reconciler, which is told to look at once."""
    row = (
        await session.execute(
            select(Job.status, Job.upstream_task_id, Job.media_status).where(Job.id == job_id)
        )
    ).one_or_none()
    if row is None:
        raise job_not_found()
    job_status, task_id, media_status = row
    if task_id is not None and task_id != report.task_id:
        raise TaskMismatch(report.task_id)
    if is_terminal(job_status) or media_status is not None:
        return ApplyResult.IGNORED
    await session.rollback()
    try:
        confirmed = await client.status(report.task_id)
    except SeedanceError as exc:
        logger.warning("job %s: could not confirm success (%s)", job_id, exc.code)
        unconfirmed = TaskReport(report.task_id, TaskState.IN_PROGRESS, raw_status="UNCONFIRMED")
        await _apply_callback(session, settings, job_id, unconfirmed)  # may attach the task
        await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(next_poll_at=datetime.now(UTC))
        )
        await session.commit()
        return ApplyResult.UNCHANGED
    return await _apply_callback(session, settings, job_id, confirmed)


def _upstream_success_statement() -> Update:
    jobs = Job.__table__
    return (
        update(jobs)
        .where(*awaiting_own_report(), jobs.c.deleted_at.is_(None))
        .values(
            upstream_video_url=bindparam("video_url", type_=jobs.c.upstream_video_url.type),
            media_status=MediaStatus.PENDING,
            media_next_attempt_at=None,
            next_poll_at=None,
            resolved_by=bindparam("source", type_=jobs.c.resolved_by.type),
            updated_at=bindparam("at", type_=jobs.c.updated_at.type),
        )
        .returning(jobs.c.id)
    )


_UPSTREAM_SUCCESS = OneRowStatement(_upstream_success_statement())


def record_upstream_success(job: Job, video_url: str | None, source: EventSource) -> None:
    """Seedance has the video: the job stays `running` until the media worker has copied it
    into our storage (only then is it `succeeded`); the reconciler stops asking."""
    job.upstream_video_url = video_url
    job.media_status = MediaStatus.PENDING
    job.media_next_attempt_at = None
    job.next_poll_at = None
    job.resolved_by = source
    job.updated_at = datetime.now(UTC)


DELETED_DETAIL = "deleted by its owner before it finished; nothing was stored"


def end_deleted(session: AsyncSession, job: Job, source: EventSource) -> None:
    """A job deleted while Seedance rendered it ends `canceled` once the render is done, with
    nothing stored (its cost stays counted: Seedance was paid)."""
    job.media_status = MediaStatus.PURGED
    job.media_next_attempt_at = None
    if job.status == JobStatus.RUNNING:
        move(session, job, JobStatus.CANCELED, source, detail=DELETED_DETAIL)


async def _apply_in_one_statement(
    session: AsyncSession, job_id: uuid.UUID, report: TaskReport, source: EventSource
) -> bool:
    """The usual case, a running job's own task finishing, in one round trip; False when
    the job is in any other situation (the general path then decides)."""
    if session.in_transaction():
        return False
    if report.state is TaskState.FAILED:
        return await fail_running(session.bind, job_id, report.task_id, source, report.error)
    if report.state is TaskState.SUCCEEDED:
        row = await _UPSTREAM_SUCCESS.first(
            session.bind,
            job_id=job_id,
            task_id=report.task_id,
            video_url=report.video_url,
            source=source,
            at=datetime.now(UTC),
        )
        return row is not None
    return False


async def apply_report(
    session: AsyncSession,
    settings: Settings,
    job_id: uuid.UUID,
    report: TaskReport,
    source: EventSource,
) -> ApplyResult:
    """Apply an upstream report (callback or status poll) to a job, under its row lock.

    Terminal jobs, and jobs whose success is already known (their copy is under way), never
    change on a report again; a report for another task raises TaskMismatch. A success
    hands the job to the media worker (`record_upstream_success`).
    """
    if await _apply_in_one_statement(session, job_id, report, source):
        return ApplyResult.APPLIED
    job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise LookupError(job_id)
    if job.upstream_task_id is not None and job.upstream_task_id != report.task_id:
        raise TaskMismatch(report.task_id)
    if is_terminal(job.status) or job.media_status is not None:
        return ApplyResult.IGNORED
    result = ApplyResult.UNCHANGED
    if job.upstream_task_id is None:
        await _attach_task(session, settings, job, report.task_id, source)
        result = ApplyResult.APPLIED
    if report.state is TaskState.SUCCEEDED and job.deleted_at is not None:
        job.resolved_by = source
        end_deleted(session, job, source)
        result = ApplyResult.APPLIED
    elif report.state is TaskState.SUCCEEDED:
        record_upstream_success(job, report.video_url, source)
        result = ApplyResult.APPLIED
    elif report.state is TaskState.FAILED:
        job.error_code = TASK_FAILED
        job.error_detail = report.error
        job.resolved_by = source
        move(session, job, JobStatus.FAILED, source, detail=report.error)
        result = ApplyResult.APPLIED
    await session.commit()
    return result


async def _attach_task(
    session: AsyncSession, settings: Settings, job: Job, task_id: str, source: EventSource
) -> None:
    """Learn the task id of a job whose submission outcome was unknown (the callback names
    our job in its URL, so the task is ours)."""
    if job.status != JobStatus.QUEUED or job.submit_started_at is None:
        raise TaskMismatch(task_id)  # we never sent this job upstream
    taken = await session.scalar(select(Job.id).where(Job.upstream_task_id == task_id))
    if taken is not None:
        raise TaskMismatch(task_id)
    mark_submitted(settings, job, task_id)
    move(session, job, JobStatus.RUNNING, source, detail="task id learned from Seedance's report")


def mark_submitted(settings: Settings, job: Job, task_id: str) -> None:
    """Record the upstream task and when to start asking about it if no callback comes."""
    now = datetime.now(UTC)
    job.upstream_task_id = task_id
    job.submitted_at = job.submitted_at or job.submit_started_at or now
    job.next_poll_at = now + timedelta(seconds=settings.callback_overdue_seconds(job.duration))
