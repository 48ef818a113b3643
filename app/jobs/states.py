"""The job state machine: one table of allowed moves, enforced by one function.

Every status change in the service goes through `move()`, which writes the matching
`job_events` row in the caller's transaction, so a job's history always explains it.
"""

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Job, JobEvent


class JobStatus(StrEnum):
    QUEUED = "queued"  # recorded, not yet accepted upstream
    RUNNING = "running"  # Seedance task id known (and, after its success, the copy under way)
    SUCCEEDED = "succeeded"  # the video is in our own storage and playable
    FAILED = "failed"
    CANCELED = "canceled"


class MediaStatus(StrEnum):
    """The life of a job's stored result, beside the job's own state: `pending` (Seedance
    reported success; the copy is due, or claimed under a lease) -> `stored` (video and
    poster in our storage; the job then moves to `succeeded`) | `failed` (the copy cannot
    be made; the job moves to `failed`). `stored` -> `purging` (deleted by its owner,
    erased, or past retention) -> `purged` (the objects are gone). A job deleted while its
    copy was pending goes straight to `purged` with nothing stored. The jobs domain owns
    the column; the media worker (`app/media/`) drives it."""

    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"
    PURGING = "purging"
    PURGED = "purged"


class CreditState(StrEnum):
    """A job's money with the credits ledger on (None without it): held from create, then
    charged on success or refunded on any other end, written by migration 0013's trigger
    with the job's last move."""

    HELD = "held"
    CHARGED = "charged"
    REFUNDED = "refunded"


def moves_credits(event: JobEvent, job: Job) -> bool:
    """Whether a recorded move held a job's credits (its creation) or settled them (its
    last move), with the ledger on."""
    if job.credit_state is None:
        return False
    return event.from_status is None or (
        event.from_status != event.to_status and event.to_status in TERMINAL
    )


class ModerationState(StrEnum):
    """A job's standing with moderation, beside its status (the row's NULL is `clear`):
    `unchecked` (accepted while the provider was down; never sent until judged),
    `held` (a result waiting for a human; not shown to users), `blocked` (refused, by a
    provider or by Seedance), `taken_down` (removed by an admin). The jobs domain owns the
    columns; the moderation domain (`app/moderation/`) drives them."""

    CLEAR = "clear"
    UNCHECKED = "unchecked"
    HELD = "held"
    BLOCKED = "blocked"
    TAKEN_DOWN = "taken_down"


# what users may not see: the result of a job in one of these states is never served
WITHHELD = frozenset({ModerationState.HELD, ModerationState.BLOCKED, ModerationState.TAKEN_DOWN})
# the error code of a job refused for its content (by us or by Seedance)
CONTENT_POLICY = "content_policy"


def appealable(job: Job) -> bool:
    """Its owner may ask a human to look again: held, blocked or taken down, or refused
    for its content, and not deleted."""
    refused = job.error_code == CONTENT_POLICY
    return (job.moderation_state in WITHHELD or refused) and job.deleted_at is None


class EventSource(StrEnum):
    API = "api"
    DISPATCHER = "dispatcher"
    CALLBACK = "webhook"  # Seedance's callback (stored and shown as "webhook", as always)
    RECONCILER = "reconciler"
    MEDIA = "media"  # the media worker: the copy is stored (or cannot be made)
    MODERATION = "moderation"  # a judgment made after the create (app/moderation)


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


def note_moderation(session: AsyncSession, job: Job, detail: str) -> JobEvent:
    """A change of the job's moderation (released, taken down) beside its status: an event
    that does not move it (from = to), so live streams carry it and resume past it like
    any other; the outbox trigger skips it (it is no move of the status)."""
    job.updated_at = datetime.now(UTC)
    event = JobEvent(
        job_id=job.id,
        from_status=job.status,
        to_status=job.status,
        source=EventSource.MODERATION,
        detail=detail,
        at=job.updated_at,
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
