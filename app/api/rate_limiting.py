"""Rate limits at the HTTP edge: the dependencies that count a request against its user's
plan or its client's address (`app/ratelimits/windows.py` keeps the windows), and the
middleware that puts the resulting headers on every response, errors included."""

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import current_principal
from app.api.state import services
from app.identity.verifier import Principal
from app.ratelimits.windows import RateLimits, RouteClass

HEADERS_STATE_KEY = "rate_limit_headers"


async def _apply(
    request: Request, route_class: RouteClass, key: str, limit: str | None = None
) -> None:
    limits: RateLimits = services(request).rate_limits
    request.state.rate_limit_headers = await limits.check(route_class, key, limit)


def per_user(route_class: RouteClass) -> object:
    """Dependency: authenticate, then count the request against the limit of the user's
    plan."""

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        plan = principal.plan
        key = f"user:{principal.subject}"
        if route_class is RouteClass.UPLOAD:  # and the plan's uploads per day
            await _apply(request, RouteClass.UPLOAD_DAY, key, f"{plan.uploads_per_day}/day")
        limit = {
            RouteClass.CREATE: plan.rate_limit_create,
            RouteClass.UPLOAD: plan.rate_limit_upload,
        }.get(route_class, plan.rate_limit_read)
        await _apply(request, route_class, key, limit)
        return principal

    return Depends(dependency)


def per_client_ip(route_class: RouteClass) -> Any:
    """Dependency: count the request against its source IP's limit."""

    async def dependency(request: Request) -> None:
        host = request.client.host if request.client else "unknown"
        await _apply(request, route_class, f"ip:{host}")

    return Depends(dependency)


class RateLimitHeadersMiddleware:
    """Adds the rate-limit headers computed for a request to its response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get(HEADERS_STATE_KEY)
                if extra:
                    present = {name.lower() for name, _ in message.get("headers", [])}
                    message["headers"] = list(message.get("headers", [])) + [
                        (name.lower().encode(), value.encode())
                        for name, value in extra.items()
                        if name.lower().encode() not in present
                    ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
