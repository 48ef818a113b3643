"""Request rate limits and the global upstream submission rate.

Built on `limits`, the engine under slowapi, through its asyncio API: slowapi calls its
storage synchronously, which with Redis would block the event loop on every request
(laurentS/slowapi#130), and binds one limiter at import time, which a `create_app(settings)`
factory cannot configure per app. Moving windows in Redis when REDIS_URL is set (replicas
share one budget), in memory otherwise. In Redis, limits' two scripts per request (take
an entry, then read the window for the headers) are one script of ours: rate limiting
was the largest share of a job read (22%), half of it the second round trip. If Redis
fails, requests are let through and the failure is logged: per-user budgets in the
database still bound what can be spent; a circuit breaker (`app/kit/breaker.py`) makes a Redis
that hangs cost a few deadlines, not one per request.
"""

import asyncio
import logging
import time
from enum import StrEnum

from limits import RateLimitItem, RateLimitItemPerSecond, WindowStats, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import BlockingConnectionPool, Redis

from app.config import Settings
from app.kit.breaker import CircuitBreaker
from app.kit.errors import ProblemError
from app.ops.metrics import RATE_LIMITED, REDIS_BREAKER_OPEN

logger = logging.getLogger(__name__)


MAX_FAILING = 10_000  # source IPs remembered as failing, per process


class RouteClass(StrEnum):
    CREATE = "create"
    READ = "read"
    CALLBACK = "callback"  # Seedance's callbacks, per source IP
    FAILED_AUTH = "failed_auth"
    UPLOAD = "upload"
    UPLOAD_DAY = "upload_day"  # a plan's uploads per day (its limit is always the plan's)


# limits' moving window (its acquire_moving_window.lua and moving_window.lua) as one
# script, so a request costs one round trip instead of two: take an entry if the window
# has room, then report the window. The clock is Redis's, the same for every replica.
# KEYS[1]: the entry timestamps, newest first. ARGV: limit, window length in seconds.
# Returns {taken (1/0), entries in the window, timestamp of the oldest of them}.
MOVING_WINDOW_HIT = """
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local start = now - expiry
local taken = 0
local last = redis.call('LINDEX', KEYS[1], limit - 1)
if not (last and tonumber(last) >= start) then
    redis.call('LPUSH', KEYS[1], string.format('%.6f', now))
    redis.call('LTRIM', KEYS[1], 0, limit - 1)
    redis.call('EXPIRE', KEYS[1], expiry)
    taken = 1
end
local low, high, oldest = 0, redis.call('LLEN', KEYS[1]) - 1, nil
while low <= high do
    local middle = math.floor((low + high) / 2)
    local value = tonumber(redis.call('LINDEX', KEYS[1], middle))
    if value and value >= start then
        oldest = middle
        low = middle + 1
    else
        high = middle - 1
    end
end
if oldest == nil then
    return {taken, 0, string.format('%.6f', now)}
end
return {taken, oldest + 1, redis.call('LINDEX', KEYS[1], oldest)}
"""


class RedisWindows:
    """Moving windows in Redis, shared by every replica: one script call per hit.

    A hit has one deadline, connecting included, instead of redis-py's socket timeouts,
    which wrap every write in `asyncio.wait_for` (a task per request) and every read in a
    timeout of its own. A command cancelled midway drops its connection (redis-py). The
    pool waits for a free connection within that deadline: redis-py's default pool
    refuses the 101st concurrent call at once (MaxConnectionsError), so a burst of
    requests opened the breaker and went through unlimited."""

    def __init__(
        self, url: str, key_prefix: str, timeout: float = 2.0, max_connections: int = 100
    ) -> None:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, socket_connect_timeout=timeout
        )
        self._redis = Redis.from_pool(pool)
        self._hit = self._redis.register_script(MOVING_WINDOW_HIT)
        self._prefix = key_prefix
        self._timeout = timeout

    async def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, WindowStats]:
        key = f"{self._prefix}:{item.key_for(*identifiers)}"
        async with asyncio.timeout(self._timeout):
            taken, count, oldest = await self._hit(
                keys=[key], args=[item.amount, item.get_expiry()]
            )
        return bool(taken), WindowStats(float(oldest) + item.get_expiry(), item.amount - count)

    async def check(self) -> bool:
        return bool(await self._redis.ping())

    async def reset(self) -> None:
        async for key in self._redis.scan_iter(match=f"{self._prefix}:*"):
            await self._redis.delete(key)

    async def aclose(self) -> None:
        await self._redis.aclose()


class MemoryWindows:
    """The same moving windows in this process only (no REDIS_URL: a laptop, one replica)."""

    def __init__(self) -> None:
        self._storage = MemoryStorage()
        self._strategy = MovingWindowRateLimiter(self._storage)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, WindowStats]:
        taken = await self._strategy.hit(item, *identifiers)
        return taken, await self._strategy.get_window_stats(item, *identifiers)

    async def check(self) -> bool:
        return await self._storage.check()

    async def reset(self) -> None:
        await self._storage.reset()

    async def aclose(self) -> None:
        return None


class RateLimits:
    """One per app: the windows' storage and the configured limits."""

    def __init__(self, settings: Settings) -> None:
        self.windows: RedisWindows | MemoryWindows = (
            RedisWindows(
                settings.redis_url,
                settings.rate_limit_key_prefix,
                settings.redis_timeout_seconds,
                settings.redis_max_connections,
            )
            if settings.redis_url
            else MemoryWindows()
        )
        self.breaker = CircuitBreaker(
            "redis",
            REDIS_BREAKER_OPEN,
            threshold=settings.redis_breaker_failures,
            reset_seconds=settings.redis_breaker_reset_seconds,
        )
        self._items = {
            RouteClass.CREATE: parse(settings.rate_limit_create),
            RouteClass.READ: parse(settings.rate_limit_read),
            RouteClass.CALLBACK: parse(settings.rate_limit_callback),
            RouteClass.FAILED_AUTH: parse(settings.rate_limit_failed_auth),
            RouteClass.UPLOAD: parse(settings.rate_limit_upload),
            RouteClass.UPLOAD_DAY: parse(f"{settings.uploads_per_day}/day"),
        }
        self._failing: dict[str, float] = {}  # key -> monotonic time its window reopens
        self._submit_item = RateLimitItemPerSecond(settings.dispatcher_submits_per_second)
        self._parsed: dict[str, RateLimitItem] = {}

    def _item(self, limit: str) -> RateLimitItem:
        """A plan's limit, parsed once."""
        if (item := self._parsed.get(limit)) is None:
            item = self._parsed[limit] = parse(limit)
        return item

    async def check(
        self, route_class: RouteClass, key: str, limit: str | None = None
    ) -> dict[str, str]:
        """Count one request (against `limit`, a plan's, else the route class's); return the
        rate-limit headers, or raise a 429 problem."""
        item = self._items[route_class] if limit is None else self._item(limit)
        hit = await self._hit(item, route_class, key)
        if hit is None:  # storage down or skipped: fail open, budgets still hold
            return {}
        allowed, stats = hit
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

    async def _hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, WindowStats] | None:
        """Take an entry in the window, through the breaker; None when the storage failed
        or the breaker is open (the caller lets the request through)."""
        if not self.breaker.allow():
            return None
        try:
            taken = await self.windows.hit(item, *identifiers)
        except Exception as exc:
            self.breaker.failed()
            logger.warning("rate limit storage unavailable (%r); not limiting", exc)
            return None
        self.breaker.succeeded()
        return taken

    def failing_for(self, key: str) -> float | None:
        """Seconds until `key` (a source IP) may fail again, if it failed too often."""
        until = self._failing.get(key)
        if until is None or until <= time.monotonic():
            self._failing.pop(key, None)
            return None
        return until - time.monotonic()

    async def note_failure(self, key: str) -> None:
        """Count a refused credential; past the limit, `failing_for` answers until the
        window reopens (in this process: no lookup, no Redis)."""
        hit = await self._hit(self._items[RouteClass.FAILED_AUTH], RouteClass.FAILED_AUTH, key)
        if hit is None:
            return
        taken, stats = hit
        if taken and stats.remaining > 0:
            return
        if len(self._failing) >= MAX_FAILING:  # a flood of addresses: forget the oldest
            self._failing.pop(next(iter(self._failing)))
        self._failing[key] = time.monotonic() + max(1.0, stats.reset_time - time.time())

    async def wait_for_submit_slot(self) -> None:
        """Block until the global generate-call rate allows one more call."""
        while True:
            hit = await self._hit(self._submit_item, "submit", "global")
            if hit is None:
                return
            allowed, stats = hit
            if allowed:
                return
            await asyncio.sleep(max(0.01, stats.reset_time - time.time()))
