"""One log line per request: method, route template, status, duration, user and job id.

Never the query string (callback URLs carry their signature there), headers or bodies.
The request id comes from asgi-correlation-id (accepted from X-Request-ID or generated).
"""

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("app.requests")


def _job_id(scope: Scope) -> str | None:
    """The job id of the path, normalized: a raw path value is the client's text (it could
    carry a newline and forge a log line), so anything that is not a UUID is `invalid`."""
    raw = scope.get("path_params", {}).get("job_id")
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return "invalid"


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            principal = scope.get("state", {}).get("principal")
            fields = {
                "method": scope["method"],
                "route": getattr(route, "path", "unmatched"),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "user": principal.subject if principal else None,
                "job_id": _job_id(scope),
            }
            logger.info(
                "%(method)s %(route)s %(status)s %(duration_ms).1fms user=%(user)s job=%(job_id)s",
                fields,
                extra=fields,
            )
