"""The review queue, case files and decisions, and suspensions (admins)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

from app.api.auth import AdminPrincipal, require_admin
from app.api.deps import Cursor, Session
from app.api.errors import problem_responses
from app.api.routes.admin import AdminJobOut
from app.api.state import services
from app.jobs.schemas import ModerationOut
from app.kit.errors import ProblemError
from app.kit.fields import SINGLE_LINE
from app.moderation import review, standing
from app.moderation.schemas import (
    CaseOut,
    CasePage,
    DecisionCreate,
    ModerationEventOut,
    ReportOut,
    StandingOut,
    SuspensionSet,
)

router = APIRouter(
    prefix="/admin",
    tags=["admin: moderation"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403, 422),
)
Subject = Annotated[str, Path(min_length=1, max_length=255, pattern=SINGLE_LINE)]


class CaseFileOut(BaseModel):
    job: AdminJobOut = Field(description="the job as its owner would see it, and more")
    video_url: str | None = Field(
        description="an admin's signed URL of the stored video, withheld or not"
    )
    poster_url: str | None
    case: CaseOut | None = Field(description="its entry in the review queue, if ever")
    events: list[ModerationEventOut] = Field(description="the moderation history, oldest first")
    reports: list[ReportOut]


@router.get("/moderation/queue", response_model=CasePage, summary="The review queue")
async def get_moderation_queue(
    session: Session,
    state: review.CaseState = review.CaseState.OPEN,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Cursor = None,
) -> CasePage:
    """Held results, reported jobs and appeals; open cases the next to review first (by
    priority: holds, reports, appeals, escalations; then age)."""
    cases, next_cursor = await review.queue(session, state, limit=limit, cursor=cursor)
    return CasePage(items=[CaseOut.model_validate(c) for c in cases], next_cursor=next_cursor)


@router.get(
    "/moderation/jobs/{job_id:uuid}",
    response_model=CaseFileOut,
    summary="A job's case file: its media, history and reports",
    responses=problem_responses(404),
)
async def get_case_file(job_id: uuid.UUID, session: Session, request: Request) -> CaseFileOut:
    built = services(request)
    found = await review.case_file(session, job_id)
    (job,) = await built.present([found.job], AdminJobOut)
    video, poster = built.media_links.admin_urls(found.job)
    return CaseFileOut(
        job=job,
        video_url=video,
        poster_url=poster,
        case=CaseOut.model_validate(found.case) if found.case else None,
        events=[ModerationEventOut.model_validate(e) for e in found.events],
        reports=[ReportOut.model_validate(r) for r in found.reports],
    )


@router.post(
    "/moderation/jobs/{job_id:uuid}/decisions",
    response_model=ModerationOut,
    summary="Decide on a job: release, take down, dismiss or escalate",
    responses=problem_responses(400, 404, 409),
)
async def decide_on_job(
    job_id: uuid.UUID,
    body: DecisionCreate,
    session: Session,
    request: Request,
    admin: AdminPrincipal,
) -> ModerationOut:
    """A takedown makes the job's content and every URL of its video and poster answer
    410 `taken_down` (URLs signed before included, on the local backend; see
    docs/moderation.md for S3) and removes the files after TAKEDOWN_RETENTION_HOURS."""
    job = await review.decide(
        session, services(request).settings, job_id, body.action, body.note, admin.subject
    )
    return ModerationOut.of(job)


@router.put(
    "/users/{subject:path}/suspension",
    response_model=StandingOut,
    summary="Suspend a user: no creates, batches, promotes or uploads",
    responses=problem_responses(400, 404),
)
async def suspend_user(
    subject: Subject, body: SuspensionSet, session: Session, request: Request
) -> StandingOut:
    """(A path that is not one line of text names no user: 404.)"""
    settings = services(request).settings
    await standing.suspend(session, subject, body.reason, body.until, "admin")
    await session.commit()
    return StandingOut.model_validate(await standing.standing(session, settings, subject))


@router.delete(
    "/users/{subject:path}/suspension",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Lift a suspension (the strikes behind it are forgiven)",
    responses=problem_responses(404),
)
async def lift_suspension(subject: Subject, session: Session, admin: AdminPrincipal) -> Response:
    if not await standing.lift(session, subject, admin.subject):
        raise ProblemError(404, "not_suspended", "This user is not suspended.")
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
