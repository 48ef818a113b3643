"""The job state machine: one table of allowed moves, enforced by one function.

Every status change in the service goes through `move()`, which writes the matching
`job_events` row in the caller's transaction, so a job's history always explains it.
"""

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, Insert, bindparam, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import Job, JobEvent, UTCDateTime
from app.db.one_row import OneRowStatement


class JobStatus(StrEnum):
    QUEUED = "queued"  # recorded, not yet accepted upstream
    RUNNING = "running"  # Seedance task id known (and, after its success, the copy under way)
    SUCCEEDED = "succeeded"  # the video is in our own storage and playable
    FAILED = "failed"
    CANCELED = "canceled"


class EventSource(StrEnum):
    API = "api"
    DISPATCHER = "dispatcher"
    WEBHOOK = "webhook"
    RECONCILER = "reconciler"
    MEDIA = "media"  # the media worker: the copy is stored (or cannot be made)


ALLOWED_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELED}),
    # running -> canceled: deleted by its owner before it finished; nothing is stored
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}

# the error code of a job whose Seedance task failed
TASK_FAILED = "upstream_failed"

TERMINAL: frozenset[JobStatus] = frozenset(s for s, moves in ALLOWED_MOVES.items() if not moves)


class IllegalMove(Exception):
    """A move the table forbids; callers treat it as a stale or duplicate signal."""

    def __init__(self, current: str, target: JobStatus) -> None:
        super().__init__(f"cannot move a job from {current} to {target}")
        self.current = current
        self.target = target


def is_terminal(status: str) -> bool:
    return JobStatus(status) in TERMINAL


def move(
    session: AsyncSession,
    job: Job,
    to: JobStatus,
    source: EventSource,
    detail: str | None = None,
) -> JobEvent:
    """Change `job.status` to `to` if the table allows it, recording the event.

    The caller owns the transaction (and, where races are possible, holds the row lock).
    """
    current = JobStatus(job.status)
    if to not in ALLOWED_MOVES[current]:
        raise IllegalMove(current, to)
    now = datetime.now(UTC)
    job.status = to
    job.updated_at = now
    if to in TERMINAL:
        job.finished_at = now
    event = JobEvent(
        job_id=job.id, from_status=current, to_status=to, source=source, detail=detail, at=now
    )
    session.add(event)
    return event


def record_creation(session: AsyncSession, job: Job) -> JobEvent:
    """The first event of every job: it enters the machine as `queued`."""
    event = JobEvent(
        job_id=job.id,
        from_status=None,
        to_status=JobStatus.QUEUED,
        source=EventSource.API,
        at=job.created_at,
    )
    session.add(event)
    return event


def awaiting_own_report() -> tuple[ColumnElement[bool], ...]:
    """The job `:job_id` is running task `:task_id`, whose outcome is not known yet: where
    the one-statement applications of a report start (a failure here, a success in
    `service`)."""
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
            resolved_by=source,
            error_code=literal(TASK_FAILED),
            error_detail=detail,
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
