"""Request rate limits and the global upstream submission rate.

Built on `limits`, the engine under slowapi, through its asyncio API: slowapi calls its
storage synchronously, which with Redis would block the event loop on every request
(laurentS/slowapi#130), and binds one limiter at import time, which a `create_app(settings)`
factory cannot configure per app. Storage is Redis when REDIS_URL is set (replicas share
one budget), memory otherwise. If Redis fails, requests are let through and the failure
is logged: per-user budgets in the database still bound what can be spent.
"""

import asyncio
import logging
import time
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItemPerSecond, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import Principal, current_principal
from app.config import Settings
from app.errors import ProblemError
from app.metrics import RATE_LIMITED

logger = logging.getLogger(__name__)
HEADERS_STATE_KEY = "rate_limit_headers"


class RouteClass(StrEnum):
    CREATE = "create"
    READ = "read"
    WEBHOOK = "webhook"


class RateLimits:
    """One per app: the storage, the strategy and the configured limits."""

    def __init__(self, settings: Settings) -> None:
        self.storage: Storage = (
            RedisStorage(
                settings.redis_url,
                implementation="redispy",
                key_prefix=settings.rate_limit_key_prefix,
                wrap_exceptions=True,
            )
            if settings.redis_url
            else MemoryStorage()
        )
        self._strategy = MovingWindowRateLimiter(self.storage)
        self._items = {
            RouteClass.CREATE: parse(settings.rate_limit_create),
            RouteClass.READ: parse(settings.rate_limit_read),
            RouteClass.WEBHOOK: parse(settings.rate_limit_webhook),
        }
        self._submit_item = RateLimitItemPerSecond(settings.dispatcher_submits_per_second)

    async def check(self, route_class: RouteClass, key: str) -> dict[str, str]:
        """Count one request; return the rate-limit headers, or raise a 429 problem."""
        item = self._items[route_class]
        try:
            allowed = await self._strategy.hit(item, route_class, key)
            stats = await self._strategy.get_window_stats(item, route_class, key)
        except Exception as exc:  # storage down: fail open, budgets still hold
            logger.warning("rate limit storage unavailable (%s); request let through", exc)
            return {}
        reset_in = max(0, int(stats.reset_time - time.time() + 0.999))
        headers = {
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(stats.remaining),
            "X-RateLimit-Reset": str(int(stats.reset_time)),
        }
        if not allowed:
            RATE_LIMITED.labels(route_class).inc()
            raise ProblemError(
                429,
                "rate_limited",
                f"Too many requests: the limit is {item}. Retry in {reset_in} seconds.",
                headers={**headers, "Retry-After": str(reset_in)},
            )
        return headers

    async def wait_for_submit_slot(self) -> None:
        """Block until the global generate-call rate allows one more call."""
        while True:
            try:
                if await self._strategy.hit(self._submit_item, "submit", "global"):
                    return
                stats = await self._strategy.get_window_stats(self._submit_item, "submit", "global")
            except Exception as exc:
                logger.warning("submission rate storage unavailable (%s); not limiting", exc)
                return
            await asyncio.sleep(max(0.01, stats.reset_time - time.time()))

    async def reset(self) -> None:
        await self.storage.reset()


async def _apply(request: Request, route_class: RouteClass, key: str) -> None:
    limits: RateLimits = request.app.state.rate_limits
    request.state.rate_limit_headers = await limits.check(route_class, key)


def per_user(route_class: RouteClass) -> object:
    """Dependency: authenticate, then count the request against the user's limit."""

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        await _apply(request, route_class, f"user:{principal.subject}")
        return principal

    return Depends(dependency)


def per_client_ip(route_class: RouteClass) -> object:
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
