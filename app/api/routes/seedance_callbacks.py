"""Where Seedance tells us a task finished. Verify, dedupe through the state machine, ack fast."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from app.api.deps import Session
from app.api.errors import problem_responses
from app.api.rate_limiting import per_client_ip
from app.api.state import services
from app.jobs import reports
from app.jobs.callbacks import signature_is_valid
from app.kit.errors import ProblemError
from app.kit.loops import wake_if_running
from app.ops.metrics import CALLBACKS_RECEIVED
from app.ratelimits.windows import RouteClass

router = APIRouter(tags=["webhooks"])  # the tag clients were generated with


class CallbackAck(BaseModel):
    result: reports.ApplyResult


def _rejected(status: int, code: str, detail: str, result: str) -> ProblemError:
    CALLBACKS_RECEIVED.labels(result).inc()
    return ProblemError(status, code, detail)


@router.post(
    "/webhooks/seedance/{job_id:uuid}",
    response_model=CallbackAck,
    summary="Seedance task callback (called by Seedance, not by clients)",
    responses=problem_responses(400, 401, 404, 409, 413, 422, 429),
    dependencies=[per_client_ip(RouteClass.CALLBACK)],
)
async def seedance_callback(
    job_id: uuid.UUID,
    request: Request,
    session: Session,
    sig: Annotated[str, Query(max_length=128, description="the job's callback signature")] = "",
) -> CallbackAck:
    settings = services(request).settings
    if not signature_is_valid(settings, job_id, sig):
        raise _rejected(401, "invalid_signature", "The callback signature is not valid.", "forged")
    body = await request.body()  # capped by RequestLimitsMiddleware
    try:
        report = reports.parse_callback(body)
    except reports.UnreadableCallback as exc:
        raise _rejected(
            400, "invalid_callback", f"Unreadable callback: {exc}", "malformed"
        ) from exc
    try:
        result = await reports.handle_callback(
            session, settings, services(request).seedance, job_id, report
        )
    except reports.TaskMismatch as exc:
        raise _rejected(
            409, "task_mismatch", "The callback names a task that is not this job's.", "mismatch"
        ) from exc
    CALLBACKS_RECEIVED.labels(result).inc()
    if result is reports.ApplyResult.APPLIED:  # the task ended: its slot is free, and a
        wake_if_running(services(request).dispatcher)  # success goes to the media worker
        wake_if_running(services(request).media_worker)  # to copy it now
    return CallbackAck(result=result)
