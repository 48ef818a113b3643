"""Live job updates as Server-Sent Events: one job, or all of yours."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from sse_starlette import ServerSentEvent

from app.api.deps import Reader, Session
from app.api.errors import problem_responses
from app.api.sse import LiveStreamResponse
from app.api.state import services
from app.credits import ledger
from app.credits.schemas import BalanceOut
from app.jobs import service
from app.jobs.live.feed import job_feed, latest_event_id, owner_feed
from app.jobs.live.inbox import BalanceChanged, FeedItem, Inbox, QueueSpot
from app.jobs.live.queue_board import QueueBoard
from app.jobs.schemas import JobEventOut, QueueSpotOut
from app.media.links import MediaLinks

router = APIRouter(tags=["events"], responses=problem_responses(401, 422, 429, 503))
MAX_EVENT_ID = 2**63 - 1  # event ids are Postgres bigints: a larger one fails here, not mid-stream
LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=MAX_EVENT_ID,
        description="resume after this event (reconnects)",
        examples=[42],
    ),
]
SSE_DESCRIPTION = (
    "`text/event-stream` of `job` events (and `moderation` ones: a job released or taken "
    "down after review); each `data` is a JobEventOut, each `id` the event id "
    "to send back as `Last-Event-ID` when reconnecting. Comment lines (`: ping`) keep the "
    "connection alive every SSE_HEARTBEAT_SECONDS."
)


def _event_schema(name: str, data: dict[str, Any], *, with_id: bool = True) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "event": {"const": name},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": data,
        },
    }
    if not with_id:
        del properties["id"]
    required = ["event", "id", "data"] if with_id else ["event", "data"]
    return {"type": "object", "required": required, "properties": properties}


JOB_EVENT = _event_schema("job", {"$ref": "#/components/schemas/JobEventOut"})
# the job's moderation changed (released, taken down) without a move of its status: the
# same JobEventOut, from_status = to_status, `job.moderation` telling where it stands now
MODERATION_EVENT = _event_schema("moderation", {"$ref": "#/components/schemas/JobEventOut"})
# the caller's credits now (no id: a balance is not replayed on resume; it is read anew)
CREDITS_EVENT = _event_schema("credits", {"$ref": "#/components/schemas/BalanceOut"}, with_id=False)
# a waiting job's new place in the queue (no id: places are not replayed on resume)
QUEUE_EVENT = _event_schema("queue", {"$ref": "#/components/schemas/QueueSpotOut"}, with_id=False)
# where a stream opened "from now on" starts: a client that reconnects before any `job` event
# sends this id as Last-Event-ID and misses nothing in between
READY_EVENT = _event_schema(
    "ready",
    {
        "type": "object",
        "required": ["after_event_id"],
        "properties": {"after_event_id": {"type": "integer", "minimum": 0}},
    },
)


def _sse_response(*events: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    schema = events[0] if len(events) == 1 else {"oneOf": list(events)}
    example = 'id: 42\nevent: job\ndata: {"event_id": 42, "to_status": "running"}\n\n'
    return {
        200: {
            "description": "The live stream, one event per item (OpenAPI 3.1's reading)",
            "content": {"text/event-stream": {"schema": schema, "example": example}},
        }
    }


HEARTBEAT = ServerSentEvent(comment="ping")


Balance = Callable[[], Awaitable[BalanceOut]]


async def _sse(
    items: AsyncIterator[FeedItem | QueueSpot | BalanceChanged | None],
    links: MediaLinks,
    board: QueueBoard,
    ready_at: int | None = None,
    balance: Balance | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """`balance`: the owner's stream says `credits` when the feed says the balance changed
    (after moves that held or settled a job's credits, once for those that came together;
    a grant, a top-up)."""
    if ready_at is not None:
        data = orjson.dumps({"after_event_id": ready_at}).decode()
        yield ServerSentEvent(data=data, id=str(ready_at), event="ready")
    async for item in items:
        if item is None:
            yield HEARTBEAT
            continue
        if isinstance(item, BalanceChanged):
            if balance is not None:
                yield ServerSentEvent(data=(await balance()).model_dump_json(), event="credits")
            continue
        if isinstance(item, QueueSpot):
            spot = QueueSpotOut(
                job_id=item.job_id,
                queue_position=item.position,
                estimated_start_at=item.estimated_start_at,
            )
            yield ServerSentEvent(data=spot.model_dump_json(), event="queue")
            continue
        payload = JobEventOut(
            event_id=item.event.id,
            job_id=item.event.job_id,
            from_status=item.event.from_status,
            to_status=item.event.to_status,
            source=item.event.source,
            at=item.event.at,
            job=board.annotate(links.job_out(item.job), item.job),
        )
        kind = "moderation" if item.event.from_status == item.event.to_status else "job"
        yield ServerSentEvent(data=payload.model_dump_json(), id=str(item.event.id), event=kind)


def _stream(
    request: Request, subject: str, events: AsyncIterator[ServerSentEvent], inbox: Inbox
) -> LiveStreamResponse:
    """The response, holding one of the user's stream slots (past the caps: 429, or 503
    for a full replica, before any byte). When the server stops, the inbox is closed: the
    feed ends, the response is completed properly (not cut), and the client resumes with
    Last-Event-ID."""
    state = services(request)
    return state.live_streams.response(
        state.stream_slots.hold(subject, events),
        inbox,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/jobs/{job_id:uuid}/events",
    summary="Follow one of your jobs live (SSE)",
    description="Sends the job's latest move at once (or, with Last-Event-ID, every move "
    "after it), then each later move, and closes after a terminal state. " + SSE_DESCRIPTION,
    response_class=LiveStreamResponse,
    status_code=200,
    responses={**_sse_response(JOB_EVENT, QUEUE_EVENT, MODERATION_EVENT), **problem_responses(404)},
)
async def stream_job_events(
    job_id: uuid.UUID,
    request: Request,
    principal: Reader,
    session: Session,
    last_event_id: LastEventId = None,
) -> LiveStreamResponse:
    await service.get_job(session, principal.subject, job_id)  # 404 unless it is yours
    await session.close()  # the stream reads with short sessions of its own
    state = services(request)
    inbox = Inbox()
    feed = job_feed(
        state.sessionmaker,
        state.event_hub,
        job_id,
        inbox,
        after_event_id=last_event_id,
        heartbeat_seconds=state.settings.sse_heartbeat_seconds,
    )
    events = _sse(feed, state.media_links, state.queue_board)
    return _stream(request, principal.subject, events, inbox)


@router.get(
    "/events",
    summary="Follow all of your jobs live (SSE)",
    description="Every move of your jobs from now on (or after Last-Event-ID). Opened without "
    "Last-Event-ID, the stream starts with a `ready` event whose `id` is where it starts. "
    "A `credits` event (a BalanceOut, no id, the balance when sent) follows the moves that "
    "held or settled a job's credits (one for those that come together), and comes when they "
    "moved otherwise (a grant, a top-up, an expiry). " + SSE_DESCRIPTION,
    response_class=LiveStreamResponse,
    status_code=200,
    responses=_sse_response(JOB_EVENT, READY_EVENT, QUEUE_EVENT, MODERATION_EVENT, CREDITS_EVENT),
)
async def stream_my_events(
    request: Request, principal: Reader, last_event_id: LastEventId = None
) -> LiveStreamResponse:
    state = services(request)
    inbox = Inbox()
    after = last_event_id
    if after is None:
        after = await latest_event_id(state.sessionmaker)
    feed = owner_feed(
        state.sessionmaker,
        state.event_hub,
        principal.subject,
        inbox,
        after_event_id=after,
        heartbeat_seconds=state.settings.sse_heartbeat_seconds,
    )
    ready_at = after if last_event_id is None else None

    async def balance() -> BalanceOut:
        async with state.sessionmaker() as session:
            found = await ledger.balance(session, principal.subject)
        return BalanceOut.model_validate(found, from_attributes=True)

    events = _sse(feed, state.media_links, state.queue_board, ready_at, balance)
    return _stream(request, principal.subject, events, inbox)
