"""Applying what Seedance reports about a task (a callback, a status poll, a submission's
answer) to its job: the webhook, the reconciler, the dispatcher and the media copier
all come here.

The usual case, a running job's own task finishing, is one statement; any other
situation takes the row lock and decides under it. What a success or a failure writes
on the job is said once (`upstream_success_columns`, `upstream_failure_columns`), for
both paths.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Insert, Update, bindparam, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.models import Job, JobEvent, UTCDateTime
from app.db.one_row import OneRowStatement
from app.jobs.refusals import fail_refused
from app.jobs.states import (
    TASK_FAILED,
    EventSource,
    JobStatus,
    MediaStatus,
    is_terminal,
    move,
)
from app.kit.errors import ProblemError
from app.seedance.client import (
    SeedanceClient,
    SeedanceError,
    TaskReport,
    TaskState,
    UpstreamProtocolError,
    parse_task_report,
)

logger = logging.getLogger(__name__)


def job_not_found() -> ProblemError:
    return ProblemError(404, "job_not_found", "No such job.")


def upstream_success_columns(video_url: Any, source: Any, at: Any) -> dict[str, Any]:
    """What Seedance's success writes on a job: values, or bind parameters of a statement.
    The job stays `running` until the media worker has copied the video into our storage
    (only then is it `succeeded`); the reconciler stops asking."""
    return {
        "upstream_video_url": video_url,
        "media_status": MediaStatus.PENDING,
        "media_next_attempt_at": None,
        "next_poll_at": None,
        "resolved_by": source,
        "updated_at": at,
    }


def upstream_failure_columns(detail: Any, source: Any) -> dict[str, Any]:
    """What a task's failure writes on a job, beside the move to `failed`."""
    return {"error_code": TASK_FAILED, "error_detail": detail, "resolved_by": source}


def awaiting_own_report() -> tuple[ColumnElement[bool], ...]:
    """The job `:job_id` is running task `:task_id`, whose outcome is not known yet: where
    the one-statement applications of a report start."""
    jobs = Job.__table__
    return (
        jobs.c.id == bindparam("job_id"),
        jobs.c.status == JobStatus.RUNNING,
        jobs.c.upstream_task_id == bindparam("task_id"),
        jobs.c.media_status.is_(None),
    )


def _fail_running_statement() -> Insert:
    """running -> failed for the job whose task reported failure, with its event, as one
    statement: the UPDATE takes the row lock and re-checks the status under it, so of two
    concurrent deliveries one moves the job and the other finds nothing to move. A job
    whose success was already reported (its copy under way) is not touched."""
    jobs, events = Job.__table__, JobEvent.__table__
    at = bindparam("at", type_=UTCDateTime())
    detail = bindparam("detail", type_=events.c.detail.type)
    source = bindparam("source", type_=events.c.source.type)
    moved = (
        update(jobs)
        .where(*awaiting_own_report())
        .values(
            status=JobStatus.FAILED,
            updated_at=at,
            finished_at=at,
            **upstream_failure_columns(detail, source),
        )
        .returning(jobs.c.id)
        .cte("moved")
    )
    columns = ["job_id", "from_status", "to_status", "source", "detail", "at"]
    row = select(
        moved.c.id,
        literal(JobStatus.RUNNING.value, events.c.from_status.type),
        literal(JobStatus.FAILED.value, events.c.to_status.type),
        source,
        detail,
        at,
    )
    return insert(events).from_select(columns, row).returning(events.c.id)


_FAIL_RUNNING = OneRowStatement(_fail_running_statement())


async def fail_running(
    engine: AsyncEngine, job_id: uuid.UUID, task_id: str, source: EventSource, error: str | None
) -> bool:
    """A running job failing on a report of its own task, in one round trip (Postgres):
    what `move()` and `apply_report` would do, without the session. False when the job is
    not running that task (the caller then takes the general path) and always on SQLite,
    which has no UPDATE inside WITH."""
    if engine.dialect.name != "postgresql":
        return False
    event = await _FAIL_RUNNING.first(
        engine, job_id=job_id, task_id=task_id, source=source, detail=error, at=datetime.now(UTC)
    )
    return event is not None


class ApplyResult(StrEnum):
    APPLIED = "applied"  # the job moved
    UNCHANGED = "unchanged"  # still in progress upstream, nothing to record
    IGNORED = "ignored"  # the job is already terminal: duplicate, late or out of order


class UnreadableCallback(Exception):
    """A callback body that is not a task report."""


def parse_callback(body: bytes) -> TaskReport:
    """The task report a callback carries (what Seedance POSTs to `callback_url`)."""
    try:
        return parse_task_report(orjson.loads(body))
    except (orjson.JSONDecodeError, UpstreamProtocolError) as exc:
        raise UnreadableCallback(str(exc)) from exc


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
        return await apply_report(session, settings, job_id, report, EventSource.CALLBACK)
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
            **upstream_success_columns(
                bindparam("video_url", type_=jobs.c.upstream_video_url.type),
                bindparam("source", type_=jobs.c.resolved_by.type),
                bindparam("at", type_=jobs.c.updated_at.type),
            )
        )
        .returning(jobs.c.id)
    )


_UPSTREAM_SUCCESS = OneRowStatement(_upstream_success_statement())


def record_upstream_success(job: Job, video_url: str | None, source: EventSource) -> None:
    """Seedance has the video (`upstream_success_columns`), on a job under its row lock."""
    _assign(job, upstream_success_columns(video_url, source, datetime.now(UTC)))


def _assign(job: Job, columns: dict[str, Any]) -> None:
    for name, value in columns.items():
        setattr(job, name, value)


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
    engine = session.bind
    assert isinstance(engine, AsyncEngine)  # sessions here are bound to the engine
    if report.state is TaskState.FAILED and report.refusal is None:
        return await fail_running(engine, job_id, report.task_id, source, report.error)
    if report.state is TaskState.SUCCEEDED:
        row = await _UPSTREAM_SUCCESS.first(
            engine,
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
    elif report.state is TaskState.FAILED and report.refusal is not None:
        job.resolved_by = source
        fail_refused(session, settings, job, report.refusal, report.error, source)
        result = ApplyResult.APPLIED
    elif report.state is TaskState.FAILED:
        _assign(job, upstream_failure_columns(report.error, source))
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
