"""What every request leaves behind: one log line (method, route template, status,
duration, user, job id) and the HTTP metrics per route template.

One middleware for both: it times the request once and reads the route the router
matched (`scope["route"]`) instead of matching it again. (prometheus-fastapi-instrumentator
did that re-match, and built a Request and a Response per request: 9% of a job read.)
Never the query string (callback URLs carry their signature there), headers or bodies.
The request id comes from asgi-correlation-id (accepted from X-Request-ID or generated).
"""

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ops.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS

logger = logging.getLogger("app.requests")
# Scrapes and probes are not counted: they would drown the API's own figures.
_NOT_MEASURED = frozenset({"/metrics", "/healthz", "/readyz"})


def _job_id(scope: Scope) -> str | None:
    """The job id of the path: every route takes it as a UUID (`{job_id:uuid}`), so the
    client's raw text (which could carry a newline and forge a log line) never gets here."""
    job_id = scope.get("path_params", {}).get("job_id")
    return None if job_id is None else str(job_id)


class RequestTelemetryMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        responded_after: float | None = None

        async def send_and_record(message: Message) -> None:
            nonlocal status, responded_after
            if message["type"] == "http.response.start":
                status = message["status"]
                responded_after = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path_format", "unmatched")
            method = scope["method"]
            if template not in _NOT_MEASURED:
                HTTP_REQUESTS.labels(template, method, f"{status // 100}xx").inc()
                # time to the response's start: a live stream's lifetime is not latency
                HTTP_REQUEST_DURATION.labels(template, method).observe(
                    duration if responded_after is None else responded_after
                )
            principal = scope.get("state", {}).get("principal")
            fields = {
                "method": method,
                "route": template,
                "status": status,
                "duration_ms": round(duration * 1000, 2),
                "user": principal.subject if principal else None,
                "job_id": _job_id(scope),
            }
            logger.info(
                "%(method)s %(route)s %(status)s %(duration_ms).1fms user=%(user)s job=%(job_id)s",
                fields,
                extra=fields,
            )
