"""The human side: reports (by anyone who sees a video), appeals (by its owner), the
review queue (held results, reported jobs, appeals) and an admin's decisions.

A job has at most one case (`moderation_cases`); a report, an appeal or a hold opens it or
raises its priority, a decision closes it. The queue is ordered by `rank_at`: the time the
case opened moved earlier by an hour per point of priority (a hold 2, each report 1, an
appeal 1, an escalation 24), so a page is one keyset range and an old case still rises.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.models import Job, ModerationCase, ModerationEvent, ModerationReport, TakenDownFile
from app.jobs.reports import job_not_found
from app.jobs.states import (
    CONTENT_POLICY,
    WITHHELD,
    MediaStatus,
    ModerationState,
    appealable,
    note_moderation,
)
from app.kit.cursor import newest_first_page
from app.kit.errors import FieldError, ProblemError
from app.moderation import standing
from app.moderation.history import EventKind, ModerationNotice, Source, notify, record
from app.ops.metrics import MODERATION_TIME_TO_DECISION

PRIORITY_STEP = timedelta(hours=1)
HOLD_PRIORITY, REPORT_PRIORITY, APPEAL_PRIORITY, ESCALATION_PRIORITY = 2, 1, 1, 24


class ReportReason(StrEnum):
    SEXUAL = "sexual"
    VIOLENCE = "violence"
    HATE = "hate"
    HARASSMENT = "harassment"
    SELF_HARM = "self_harm"
    ILLEGAL = "illegal"
    SPAM = "spam"
    OTHER = "other"


class Action(StrEnum):
    RELEASE = "release"  # a held or reported video is fine: shown (again)
    TAKEDOWN = "takedown"  # removed for good: 410 everywhere, files kept for evidence a while
    DISMISS = "dismiss"  # nothing to do (a report without merit, an appeal refused)
    ESCALATE = "escalate"  # stays open, first in the queue, for a senior reviewer


class CaseState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


def _open_case(
    session: AsyncSession, case: ModerationCase | None, job: Job, priority: int
) -> ModerationCase:
    """Open the job's case, or raise the priority of the open one (the caller holds the
    job's row lock, so two reports at once both count)."""
    now = datetime.now(UTC)
    if case is None:
        case = ModerationCase(job_id=job.id, subject=job.owner)
        session.add(case)
    if case.opened_at is None or case.closed_at is not None:  # new, or opened again
        case.opened_at, case.priority, case.closed_at = now, 0, None
        case.held, case.reports, case.appealed, case.escalated = False, 0, False, False
    case.priority += priority
    case.rank_at = case.opened_at - case.priority * PRIORITY_STEP
    return case


async def _locked(
    session: AsyncSession, job_id: uuid.UUID
) -> tuple[Job | None, ModerationCase | None]:
    job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
    case = await session.get(ModerationCase, job_id, populate_existing=True) if job else None
    return job, case


async def report(
    session: AsyncSession,
    reporter: str,
    job_id: uuid.UUID,
    reason: ReportReason,
    comment: str | None,
) -> None:
    """File a report about any job; the same answer whether it exists or not (no oracle
    of which ids are jobs). One open report per reporter and job: a second is a no-op."""
    job, case = await _locked(session, job_id)
    if job is None or job.deleted_at is not None:
        await session.rollback()
        return
    open_report = await session.scalar(
        select(ModerationReport.id).where(
            ModerationReport.job_id == job_id,
            ModerationReport.reporter == reporter,
            ModerationReport.closed_at.is_(None),
        )
    )
    if open_report is not None:
        await session.rollback()
        return
    session.add(ModerationReport(job_id=job_id, reporter=reporter, reason=reason, comment=comment))
    case = _open_case(session, case, job, REPORT_PRIORITY)
    case.reports += 1
    record(
        session,
        job.owner,
        EventKind.REPORTED,
        Source.USER,
        job_id=job_id,
        reason=reason,
        actor=reporter,
    )
    await session.commit()


async def appeal(session: AsyncSession, owner: str, job_id: uuid.UUID, statement: str) -> None:
    """The owner asks a human to look again at a held, blocked or taken-down job or a
    `content_policy` failure; appealing again while it is open changes nothing."""
    job, case = await _locked(session, job_id)
    if job is None or job.owner != owner or job.deleted_at is not None:
        await session.rollback()
        raise job_not_found()
    if not appealable(job):
        await session.rollback()
        raise ProblemError(
            409,
            "not_appealable",
            "Only a job moderation held, blocked or took down can be appealed.",
        )
    if case is not None and case.closed_at is None and case.appealed:
        await session.rollback()
        return
    case = _open_case(session, case, job, APPEAL_PRIORITY)
    case.appealed = True
    record(
        session, owner, EventKind.APPEALED, Source.USER, job_id=job_id, actor=owner, note=statement
    )
    await session.commit()


def hold(session: AsyncSession, job: Job, case: ModerationCase | None) -> None:
    """A result waits for a human (the output stage), in the caller's transaction."""
    job.moderation_state = ModerationState.HELD
    _open_case(session, case, job, HOLD_PRIORITY).held = True
    notify(session, ModerationNotice.HELD, job.id)


async def decide(
    session: AsyncSession,
    settings: Settings,
    job_id: uuid.UUID,
    action: Action,
    note: str | None,
    admin: str,
) -> Job:
    """An admin's decision on a job (whether or not a case is open: an admin may take down
    any job). Release shows it again; takedown withholds it for good (410 everywhere) and
    removes its files after TAKEDOWN_RETENTION_HOURS; dismiss closes the case as it is;
    escalate keeps it open, first in line."""
    job, case = await _locked(session, job_id)
    if job is None:
        raise job_not_found()
    now = datetime.now(UTC)
    if action is Action.ESCALATE:
        case = _open_case(session, case, job, ESCALATION_PRIORITY)
        case.escalated = True
        record(
            session,
            job.owner,
            EventKind.ESCALATED,
            Source.ADMIN,
            job_id=job.id,
            actor=admin,
            note=note,
        )
        await session.commit()
        return job
    if action is Action.RELEASE:
        if job.moderation_state == ModerationState.TAKEN_DOWN:
            raise ProblemError(409, "taken_down", "A taken-down job cannot be released.")
        if job.moderation_state == ModerationState.HELD:
            notify(session, ModerationNotice.RELEASED, job.id)
        if job.moderation_state in WITHHELD:
            job.moderation_state = None
        await standing.forgive(session, ModerationEvent.job_id == job.id)  # overturned
        kind = EventKind.RELEASED
    elif action is Action.TAKEDOWN:
        _take_down(session, settings, job, now)
        kind = EventKind.TAKEN_DOWN
    else:
        kind = EventKind.DISMISSED
    record(session, job.owner, kind, Source.ADMIN, job_id=job.id, actor=admin, note=note)
    if kind is not EventKind.DISMISSED:
        note_moderation(session, job, kind.value)  # the owner's live streams see it
    if case is not None and case.closed_at is None:
        case.closed_at = now
        MODERATION_TIME_TO_DECISION.observe((now - case.opened_at).total_seconds())
    await session.execute(
        update(ModerationReport)
        .where(ModerationReport.job_id == job.id, ModerationReport.closed_at.is_(None))
        .values(closed_at=now)
    )
    await session.commit()
    return job


async def refuse_taken_down(session: AsyncSession, sha256: str) -> None:
    """A file whose bytes are a taken-down video's cannot come back as an upload."""
    if await session.get(TakenDownFile, sha256) is not None:
        await session.rollback()
        raise ProblemError(
            422,
            CONTENT_POLICY,
            "This file was taken down under the content policy.",
            errors=[
                FieldError(
                    field="file",
                    code=CONTENT_POLICY,
                    message="a file taken down under the content policy",
                    categories=[],
                )
            ],
        )


def _take_down(session: AsyncSession, settings: Settings, job: Job, now: datetime) -> None:
    if job.moderation_state == ModerationState.TAKEN_DOWN:
        return
    job.moderation_state = ModerationState.TAKEN_DOWN
    job.moderation_source = Source.ADMIN
    if job.media_sha256 is not None:
        session.add(TakenDownFile(sha256=job.media_sha256, job_id=job.id, at=now))
    if job.media_status == MediaStatus.STORED:
        # the purge removes the files once the evidence is no longer kept
        job.media_status = MediaStatus.PURGING
        job.media_next_attempt_at = now + timedelta(hours=settings.takedown_retention_hours)
    notify(session, ModerationNotice.TAKEN_DOWN, job.id)


async def queue(
    session: AsyncSession, state: CaseState, *, limit: int, cursor: str | None
) -> tuple[list[ModerationCase], str | None]:
    """A page of cases: open ones first by rank (the next to review first), closed ones
    most recently opened first."""
    open_ = state is CaseState.OPEN
    query = select(ModerationCase).where(
        ModerationCase.closed_at.is_(None) if open_ else ModerationCase.closed_at.is_not(None)
    )
    keys = (ModerationCase.rank_at, ModerationCase.job_id)
    return await newest_first_page(
        session, query, keys, limit=limit, cursor=cursor, oldest_first=open_
    )


async def open_cases(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many cases wait for a human, and when the oldest opened (the metrics)."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(ModerationCase.opened_at)).where(
                ModerationCase.closed_at.is_(None)
            )
        )
    ).one()
    return count, oldest


@dataclass(frozen=True, slots=True)
class CaseFile:
    """Everything an admin needs to decide on a job."""

    job: Job
    case: ModerationCase | None
    events: list[ModerationEvent]
    reports: list[ModerationReport]


async def case_file(session: AsyncSession, job_id: uuid.UUID) -> CaseFile:
    job = await session.get(Job, job_id)
    if job is None:
        raise job_not_found()
    case = await session.get(ModerationCase, job_id)
    events = await session.scalars(
        select(ModerationEvent).where(ModerationEvent.job_id == job_id).order_by(ModerationEvent.id)
    )
    reports = await session.scalars(
        select(ModerationReport)
        .where(ModerationReport.job_id == job_id)
        .order_by(ModerationReport.created_at)
    )
    return CaseFile(job, case, list(events), list(reports))
