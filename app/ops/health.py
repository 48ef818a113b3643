"""What readiness checks: the database reachable and migrated, Redis answering. Each check
has a deadline, so a hung dependency makes a probe slow, never stuck."""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.breaker import BreakerState, CircuitBreaker
from app.kit.errors import FieldError

CHECK_TIMEOUT_SECONDS = 2.0


async def database_problem(engine: AsyncEngine, head: str | None) -> FieldError | None:
    try:
        async with engine.connect() as conn:
            current = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except Exception as exc:
        return FieldError(field="database", code="unreachable", message=type(exc).__name__)
    if current != head:
        return FieldError(
            field="database",
            code="not_migrated",
            message=f"schema at {current}, code expects {head}: run alembic upgrade head",
        )
    return None


async def redis_problem(
    breaker: CircuitBreaker, ping: Callable[[], Awaitable[bool]]
) -> FieldError | None:
    if breaker.state is not BreakerState.CLOSED:
        return FieldError(field="redis", code="circuit_open", message="requests skip Redis")
    try:
        healthy = await ping()
    except Exception:
        healthy = False
    return (
        None if healthy else FieldError(field="redis", code="unreachable", message="no PING reply")
    )


async def bounded(check: Coroutine[Any, Any, FieldError | None], name: str) -> FieldError | None:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return FieldError(
            field=name, code="timeout", message=f"no answer in {CHECK_TIMEOUT_SECONDS}s"
        )
