"""Prompt variants side by side."""

import uuid

from fastapi import APIRouter, Request

from app.api.deps import Reader, Session
from app.api.errors import problem_responses
from app.api.state import services
from app.jobs import service
from app.jobs.schemas import BatchOut

router = APIRouter(prefix="/batches", tags=["jobs"], responses=problem_responses(401, 422, 429))


@router.get(
    "/{batch_id:uuid}",
    response_model=BatchOut,
    summary="One of your batches, its variants side by side",
    responses=problem_responses(404),
)
async def get_batch(
    batch_id: uuid.UUID,
    principal: Reader,
    session: Session,
    request: Request,
) -> BatchOut:
    batch, jobs = await service.get_batch(session, principal.subject, batch_id)
    return BatchOut.of(batch, await services(request).present(jobs))
