"""This replica's live-stream responses: how they are sent, and how they all end when the
server stops.

sse-starlette's EventSourceResponse runs four tasks per stream in an anyio task group
(sender, ping, disconnect listener, shutdown listener); at thousands of open streams
that is most of a stream's memory (bench/sse_fanout.py). Here the events are sent from
the request's own task and one more task waits for the client to go; heartbeats come
from the feed (its wait's timer) and shutdown from one watcher per process. sse-starlette
still writes the wire format (ServerSentEvent).
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncGenerator, Mapping

from sse_starlette import ServerSentEvent
from sse_starlette.sse import AppStatus
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.disconnect import until_disconnect
from app.db.availability import DATABASE_ERRORS, is_database_unavailable
from app.jobs.live.inbox import Inbox

logger = logging.getLogger(__name__)
SHUTDOWN_POLL_SECONDS = 0.5


def _server_is_stopping() -> bool:
    """Whether uvicorn is shutting down. It waits for open connections before the app's
    own shutdown, so streams must notice it themselves. sse-starlette's hook into uvicorn
    sets AppStatus.should_exit on SIGTERM and SIGINT; a server stopped by its
    `should_exit` alone (an embedding program, the tests) is found through the SIGTERM
    handler it installed, as sse-starlette's own watcher does."""
    if AppStatus.should_exit:
        return True
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


async def _next_or_none(events: AsyncGenerator[ServerSentEvent, None]) -> ServerSentEvent | None:
    """The next event; None at the end, and when the database fails under the feed (a
    restart, an outage): the stream then ends cleanly and its client resumes with
    Last-Event-ID, getting exactly what it missed once the database answers (until then
    its reconnect is a 503 with Retry-After), rather than being cut mid-response."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None
    except DATABASE_ERRORS as exc:
        if not is_database_unavailable(exc):
            raise
        logger.warning("live stream ended: the database is unavailable (%s)", exc)
        return None


class LiveStreamResponse(StreamingResponse):
    """`text/event-stream` of `events`; the stream's inbox is closed when the client goes
    (the feed then ends) or the server stops (the response is completed, not cut)."""

    def __init__(
        self,
        streams: "LiveStreams",
        events: AsyncGenerator[ServerSentEvent, None],
        inbox: Inbox,
        headers: Mapping[str, str],
    ) -> None:
        # the events are sent by __call__ itself, so the base class gets no body of its own
        super().__init__(iter(()), media_type="text/event-stream", headers=headers)
        self._events = events
        self._streams = streams
        self._inbox = inbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        end = {"type": "http.response.body", "body": b"", "more_body": False}
        events = self._events
        if scope["method"] == "HEAD":  # headers only: a HEAD stream would never complete
            await events.aclose()
            await send(end)
            return
        client_gone = asyncio.ensure_future(until_disconnect(receive))
        client_gone.add_done_callback(lambda _: self._inbox.close())
        self._streams.opened(self._inbox)
        try:
            while (event := await _next_or_none(events)) is not None:
                body = event.encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send(end)
        finally:
            self._streams.closed(self._inbox)
            client_gone.cancel()
            await events.aclose()


class LiveStreams:
    """The replica's open streams, closed together when the server stops."""

    def __init__(self) -> None:
        self._open: set[Inbox] = set()
        self._watch: asyncio.Task[None] | None = None

    def response(
        self,
        events: AsyncGenerator[ServerSentEvent, None],
        inbox: Inbox,
        headers: Mapping[str, str],
    ) -> LiveStreamResponse:
        return LiveStreamResponse(self, events, inbox, headers)

    def opened(self, inbox: Inbox) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._close_on_shutdown(), name="live-streams")
        self._open.add(inbox)

    def closed(self, inbox: Inbox) -> None:
        self._open.discard(inbox)

    async def _close_on_shutdown(self) -> None:
        while not _server_is_stopping():  # noqa: ASYNC110 (a flag of uvicorn, no event to await)
            await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
        logger.info("server stopping: ending %d live streams", len(self._open))
        for inbox in list(self._open):
            inbox.close()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
