"""Live job updates as Server-Sent Events (sse-starlette): one job, or all of yours."""

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.deps import Reader, Session
from app.errors import problem_responses
from app.jobs import service
from app.jobs.feed import FeedItem, job_feed, owner_feed
from app.media.links import MediaLinks
from app.schemas import JobEventOut

router = APIRouter(tags=["events"], responses=problem_responses(401, 422, 429))
LastEventId = Annotated[
    int | None,
    Header(alias="Last-Event-ID", ge=0, description="resume after this event (reconnects)"),
]
SHUTDOWN_GRACE_SECONDS = 2.0  # well under uvicorn's graceful shutdown timeout
SSE_DESCRIPTION = (
    "`text/event-stream` of `job` events; each `data` is a JobEventOut, each `id` the event id "
    "to send back as `Last-Event-ID` when reconnecting."
)


async def _sse(items: AsyncIterator[FeedItem], links: MediaLinks) -> AsyncIterator[ServerSentEvent]:
    async for item in items:
        payload = JobEventOut(
            event_id=item.event.id,
            job_id=item.event.job_id,
            from_status=item.event.from_status,
            to_status=item.event.to_status,
            source=item.event.source,
            at=item.event.at,
            job=links.job_out(item.job),
        )
        yield ServerSentEvent(data=payload.model_dump_json(), id=str(item.event.id), event="job")


def _stream(
    request: Request, items: AsyncIterator[FeedItem], shutdown: anyio.Event
) -> EventSourceResponse:
    """On server shutdown sse-starlette sets `shutdown`; the feed then ends and the
    response is completed properly (not cut), and the client resumes with Last-Event-ID."""
    return EventSourceResponse(
        _sse(items, request.app.state.media_links),
        ping=request.app.state.settings.sse_heartbeat_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )


@router.get(
    "/jobs/{job_id}/events",
    summary="Follow one of your jobs live (SSE)",
    description="Sends the job's latest move at once (or, with Last-Event-ID, every move "
    "after it), then each later move, and closes after a terminal state. " + SSE_DESCRIPTION,
    response_class=EventSourceResponse,
    responses=problem_responses(404),
)
async def job_events(
    job_id: uuid.UUID,
    request: Request,
    principal: Reader,
    session: Session,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    await service.get_job(session, principal.subject, job_id)  # 404 unless it is yours
    await session.close()  # the stream reads with short sessions of its own
    state = request.app.state
    shutdown = anyio.Event()
    feed = job_feed(
        state.sessionmaker,
        state.event_hub,
        job_id,
        after_event_id=last_event_id,
        recheck_seconds=state.settings.sse_heartbeat_seconds,
        stop=shutdown,
    )
    return _stream(request, feed, shutdown)


@router.get(
    "/events",
    summary="Follow all of your jobs live (SSE)",
    description="Every move of your jobs from now on (or after Last-Event-ID). " + SSE_DESCRIPTION,
    response_class=EventSourceResponse,
)
async def my_events(
    request: Request, principal: Reader, last_event_id: LastEventId = None
) -> EventSourceResponse:
    state = request.app.state
    shutdown = anyio.Event()
    feed = owner_feed(
        state.sessionmaker,
        state.event_hub,
        principal.subject,
        after_event_id=last_event_id,
        recheck_seconds=state.settings.sse_heartbeat_seconds,
        stop=shutdown,
    )
    return _stream(request, feed, shutdown)
