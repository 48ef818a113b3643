"""Job use cases: create (idempotently), read, list, cancel, delete and erase.

What Seedance reports about a job is applied in `app/jobs/reports.py`.

Routers call these; none of them touch `Request`.
"""

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol

from sqlalchemy import ColumnElement, Select, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.models import Batch, Job, JobEvent
from app.db.one_row import OneRowStatement
from app.identity.plans import PlanLimits
from app.jobs import budget, erasure_marks
from app.jobs.inputs import Inputs, is_reference, named_inputs, upload_id_of
from app.jobs.money import Wallet
from app.jobs.reports import job_not_found
from app.jobs.schemas import (
    URL_LISTS,
    BatchCreate,
    JobCreate,
    PromoteRequest,
    SeedanceModel,
    job_parameters,
)
from app.jobs.screening import InputScreen, Screening, job_pieces
from app.jobs.states import (
    EventSource,
    JobStatus,
    MediaStatus,
    move,
    record_creation,
)
from app.kit.cursor import newest_first_page
from app.kit.errors import ProblemError

logger = logging.getLogger(__name__)


def estimate_cost(settings: Settings, body: JobCreate) -> int:
    """Credits a job is expected to cost, from the operator's per-second cost table."""
    assert body.duration is not None  # the body's validator fills in the model's default
    return settings.cost_per_second[body.model][body.resolution] * body.duration


def _new_job(
    settings: Settings,
    owner: str,
    plan: PlanLimits,
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
        plan=plan.name,
        **job_parameters(body),
        estimated_cost=estimate_cost(settings, body),
        idempotency_key=idempotency_key,
        request_fingerprint=body.fingerprint() if idempotency_key else None,
        batch_id=batch_id,
        source_job_id=source_job_id,
        status=JobStatus.QUEUED,
        created_at=now,
        updated_at=now,
    )


@dataclass(frozen=True, slots=True)
class Checks:
    """What a create passes through besides its own rules: the uploads it names, the
    input stage of moderation and the credits it holds (ports the uploads, moderation and
    credits domains implement)."""

    inputs: Inputs
    screen: InputScreen
    wallet: Wallet


async def _screen(
    session: AsyncSession,
    checks: Checks,
    owner: str,
    jobs: list[tuple[JobCreate, Callable[[str], str]]],
) -> Screening:
    """Moderation's input stage for each job of a create (`jobs` pairs each body with how
    the request names its fields), with no transaction open while the provider answers."""
    named = {upload_id_of(i) for body, _ in jobs for i in body.images or () if is_reference(i)}
    urls = await checks.inputs.fetch_urls(session, named) if named else {}
    await session.rollback()
    return await checks.screen.screen(
        owner,
        [job_pieces(body.prompt, body.images or (), field_of, urls) for body, field_of in jobs],
    )


async def _record(
    session: AsyncSession,
    checks: Checks,
    screening: Screening,
    owner: str,
    jobs: list[tuple[Job, str]],
) -> None:
    """Write the jobs and their creation moves, link the uploads they name (`jobs` pairs
    each with its fields' prefix in the request), record what moderation said, and
    commit."""
    for job, _ in jobs:
        session.add(job)
        record_creation(session, job)
    await session.flush()  # the jobs before the rows that link uploads to them
    await checks.inputs.link(session, owner, named_inputs(jobs))
    await checks.screen.record(session, screening, jobs)
    await session.commit()


async def create_job(
    session: AsyncSession,
    settings: Settings,
    checks: Checks,
    owner: str,
    plan: PlanLimits,
    body: JobCreate,
    idempotency_key: str | None,
    *,
    source_job_id: uuid.UUID | None = None,
) -> tuple[Job, bool]:
    """Record a queued job; returns (job, created). A repeated Idempotency-Key returns the
    original job when the body matches and raises 409 when it does not. The user's plan,
    moderation, budgets and the uploads it names are checked before anything is
    recorded."""
    started_at = datetime.now(UTC)
    plan.check(body.model, body.resolution, model_field="model", resolution_field="resolution")
    screening = await _screen(session, checks, owner, [(body, str)])
    await budget.lock_owner(session, owner)  # one create at a time per user, until commit
    await erasure_marks.check_not_erased(session, owner, started_at)
    if idempotency_key is not None:
        existing = await session.scalar(
            select(Job).where(Job.owner == owner, Job.idempotency_key == idempotency_key)
        )
        if existing is not None:
            await session.commit()  # nothing written; releases the lock, keeps `existing` loaded
            _check_replay(existing.request_fingerprint, body.fingerprint())
            return existing, False
    job = _new_job(
        settings, owner, plan, body, idempotency_key=idempotency_key, source_job_id=source_job_id
    )
    await checks.wallet.hold(session, owner, [job])  # its 402 before the daily cap's
    await budget.enforce(session, plan, owner, cost=job.estimated_cost)
    await _record(session, checks, screening, owner, [(job, "")])
    return job, True


async def create_batch(
    session: AsyncSession,
    settings: Settings,
    checks: Checks,
    owner: str,
    plan: PlanLimits,
    body: BatchCreate,
    idempotency_key: str | None,
) -> tuple[Batch, list[Job], bool]:
    """Record all variants under one batch, or none of them (plan, moderation and budgets
    are checked for the whole batch first)."""
    started_at = datetime.now(UTC)
    variants = body.variants()
    for index, variant in enumerate(variants):
        plan.check(
            variant.model,
            variant.resolution,
            model_field=body.field(index, "model"),
            resolution_field=body.field(index, "resolution"),
        )
    fields = [partial(body.field, index) for index in range(len(variants))]
    screening = await _screen(session, checks, owner, list(zip(variants, fields, strict=True)))
    fingerprint = body.fingerprint()
    await budget.lock_owner(session, owner)
    await erasure_marks.check_not_erased(session, owner, started_at)
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
    jobs = [_new_job(settings, owner, plan, v, batch_id=batch.id) for v in variants]
    await checks.wallet.hold(session, owner, jobs)
    await budget.enforce(
        session, plan, owner, cost=sum(j.estimated_cost for j in jobs), jobs=len(jobs)
    )
    session.add(batch)
    await session.flush()  # the batch row before the jobs that point at it
    await _record(
        session, checks, screening, owner, [(job, body.field(i, "")) for i, job in enumerate(jobs)]
    )
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
    checks: Checks,
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
    same = job_parameters(source)
    render = JobCreate.model_validate(
        same
        | {name: same[name] or None for name in URL_LISTS}  # [] is refused as input
        | {
            "model": SeedanceModel.STANDARD,
            "duration": body.duration,
            "resolution": body.resolution,
        }
    )
    return await create_job(
        session, settings, checks, owner, plan, render, idempotency_key, source_job_id=source.id
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


async def _forget_moves_text(
    session: AsyncSession, jobs: list[uuid.UUID] | Select[uuid.UUID]
) -> None:
    """A move's detail may quote upstream's text, which may quote the prompt (a moderation
    refusal does). Before the tombstone's own move, which says nothing of the user's."""
    await session.execute(update(JobEvent).where(JobEvent.job_id.in_(jobs)).values(detail=None))


def _tombstone(session: AsyncSession, job: Job, source: EventSource, detail: str) -> None:
    """Forget what the user gave and what we made: the prompt, inputs, idempotency key and
    any text quoting them go now (`_forget_moves_text` clears the moves'), stored media is
    handed to the media worker's purge, a job not yet sent is canceled; the row stays, with
    its cost, for accounting. A job Seedance is still working on ends when it reports (the
    media worker then stores nothing)."""
    now = datetime.now(UTC)
    job.deleted_at = now
    job.prompt = None
    job.request_fingerprint = None  # a digest of the prompt is the prompt, to a guesser
    job.idempotency_key = None  # the client's own text
    job.error_detail = None  # upstream's words, which may quote the prompt
    job.media_error = None
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
    await _forget_moves_text(session, [job.id])
    _tombstone(session, job, EventSource.API, "deleted by its owner")
    await session.commit()
    return job


@dataclass(frozen=True, slots=True)
class Erasure:
    subject: str
    pseudonym: str  # stands for the subject in what is kept (costs, revoked keys)
    jobs: int  # jobs of the user that were not deleted yet
    prompts: int  # of them, those that had a prompt
    job_ids: list[uuid.UUID]  # every job of the user, deleted before or now
    batch_ids: list[uuid.UUID]


# Another domain's part of an erasure (webhook messages about the jobs, the subject's API
# keys): given the subject and its pseudonym (the jobs and batches are the pseudonym's by
# then), it forgets what it holds of the user, in the erasure's transaction.
Forgetter = Callable[[AsyncSession, str, str], Awaitable[None]]
ERASE_BATCH = 500


class FileRemoval(Protocol):
    """A domain's stored files of an erased user, removed once the rows are forgotten:
    returns (files removed now, files left to its sweep after a storage failure)."""

    async def remove_erased(self, session: AsyncSession, erasure: Erasure) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class ErasureReport:
    erasure: Erasure
    files: dict[str, tuple[int, int]]  # by domain: (removed now, pending removal)


class UserErasure:
    """Right to erasure across every domain: the forgetters and file removals are listed
    once, where `main` composes the process."""

    def __init__(
        self, forgetters: Sequence[Forgetter], file_removals: dict[str, FileRemoval]
    ) -> None:
        self._forgetters = forgetters
        self._file_removals = file_removals

    async def erase(self, session: AsyncSession, subject: str) -> ErasureReport:
        erasure = await erase_user(session, subject, self._forgetters)
        files = {
            name: await removal.remove_erased(session, erasure)
            for name, removal in self._file_removals.items()
        }
        return ErasureReport(erasure, files)


async def erase_user(
    session: AsyncSession, owner: str, forgetters: Sequence[Forgetter] = ()
) -> Erasure:
    """Right to erasure: every job of `owner` becomes a tombstone (see `_tombstone`), the
    subject is replaced by a pseudonym wherever a row is kept, and each forgetter clears
    its domain's part; nothing the user gave, nor their name, is left."""
    pseudonym = f"erased-{uuid.uuid4().hex}"
    jobs = prompts = 0
    await budget.lock_owner(session, owner)  # creates and uploads in flight commit first
    await erasure_marks.erasing(session, owner)  # and those after are refused
    while True:
        batch = list(
            await session.scalars(
                select(Job)
                .where(Job.owner == owner, Job.deleted_at.is_(None))
                .limit(ERASE_BATCH)
                .with_for_update()
            )
        )
        await _forget_moves_text(session, [job.id for job in batch])
        for job in batch:
            prompts += job.prompt is not None
            _tombstone(session, job, EventSource.API, "erased at the user's request")
            # in the tombstone's own transaction: its `job.deleted` webhook never names
            # the user
            job.owner = pseudonym
        await session.commit()
        jobs += len(batch)
        if len(batch) < ERASE_BATCH:
            break
    users = select(Job.id).where(Job.owner.in_((owner, pseudonym)))
    job_ids = list(await session.scalars(users))
    batch_ids = list(await session.scalars(select(Batch.id).where(Batch.owner == owner)))
    erasure = Erasure(owner, pseudonym, jobs, prompts, job_ids, batch_ids)
    await _forget_moves_text(session, users)  # jobs deleted before: their later moves
    await session.execute(
        update(Job)
        .where(Job.owner.in_((owner, pseudonym)))
        .values(owner=pseudonym, idempotency_key=None, error_detail=None)
    )
    # a batch's fingerprint digests its prompts; its key is the client's text
    await session.execute(
        update(Batch)
        .where(Batch.owner == owner)
        .values(owner=erasure.pseudonym, request_fingerprint=None, idempotency_key=None)
    )
    for forget in forgetters:
        await forget(session, owner, erasure.pseudonym)
    await erasure_marks.erased(session, owner)
    await session.commit()
    return erasure


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


async def read_job(engine: AsyncEngine, owner: str, job_id: uuid.UUID) -> Job:
    """The owner's job, read in one round trip on the driver connection
    (`OneRowStatement`), with no session, since nothing is changed: a `Job` attached to
    no session, for the API to show (`Services.present`)."""
    row = await _OWNED_JOB_ROW.first(engine, job_id=job_id, owner=owner)
    if row is None:
        raise job_not_found()
    return Job(**row)


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
