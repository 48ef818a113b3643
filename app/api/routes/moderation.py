"""Reports and appeals: what app stores ask of a product with user-made content."""

import uuid

from fastapi import APIRouter, status

from app.api.deps import Creator, Session
from app.api.errors import problem_responses
from app.moderation import review
from app.moderation.schemas import AppealCreate, Received, ReportCreate

router = APIRouter(prefix="/jobs", tags=["moderation"], responses=problem_responses(401, 422, 429))


@router.post(
    "/{job_id:uuid}/reports",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Received,
    summary="Report a video that breaks the content policy",
    responses=problem_responses(400, 404),
)
async def report_job(
    job_id: uuid.UUID, body: ReportCreate, principal: Creator, session: Session
) -> Received:
    """Any signed-in user or service key may report any job (the people who see a video
    are rarely its owner). The answer is the same whether the job exists or not; a report
    of an existing job goes to the review queue. One open report per reporter and job. (A
    path whose id is not a UUID names no job at all: 404.)"""
    await review.report(session, principal.subject, job_id, body.reason, body.comment)
    return Received()


@router.post(
    "/{job_id:uuid}/appeal",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Received,
    summary="Ask for a human review of a moderation decision on your job",
    responses=problem_responses(400, 404, 409),
)
async def appeal_job(
    job_id: uuid.UUID, body: AppealCreate, principal: Creator, session: Session
) -> Received:
    """For a job moderation held, blocked or took down, or one that failed
    `content_policy` (`moderation.appealable`); 409 `not_appealable` otherwise."""
    await review.appeal(session, principal.subject, job_id, body.statement)
    return Received()
