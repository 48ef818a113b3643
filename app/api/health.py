"""Probes for orchestrators and scrapers: liveness, readiness, Prometheus metrics."""

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.auth import admin_principal
from app.breaker import BreakerState
from app.errors import FieldError, ProblemError, problem_responses
from app.jobs import stats
from app.jobs.states import JobStatus
from app.metrics import (
    DB_POOL_CHECKED_OUT,
    EVENT_LOOP_LAG,
    JOBS_BY_STATUS,
    OUTBOUND_OLDEST_PENDING,
)
from app.outbound import deliveries

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _database_problem(request: Request) -> FieldError | None:
    try:
        async with request.app.state.engine.connect() as conn:
            current = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except Exception as exc:
        return FieldError(field="database", code="unreachable", message=type(exc).__name__)
    head = request.app.state.migration_head
    if current != head:
        return FieldError(
            field="database",
            code="not_migrated",
            message=f"schema at {current}, code expects {head}: run alembic upgrade head",
        )
    return None


async def _redis_problem(request: Request) -> FieldError | None:
    if not request.app.state.settings.redis_url:
        return None
    rate_limits = request.app.state.rate_limits
    if rate_limits.breaker.state is not BreakerState.CLOSED:
        return FieldError(field="redis", code="circuit_open", message="requests skip Redis")
    try:
        healthy = await rate_limits.windows.check()
    except Exception:
        healthy = False
    return (
        None if healthy else FieldError(field="redis", code="unreachable", message="no PING reply")
    )


async def _bounded(check: Any, name: str) -> FieldError | None:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return FieldError(
            field=name, code="timeout", message=f"no answer in {CHECK_TIMEOUT_SECONDS}s"
        )


@router.get(
    "/readyz",
    summary="Ready for traffic: database reachable and migrated (Redis down only degrades)",
    responses=problem_responses(503),
)
async def readyz(request: Request) -> dict[str, str | list[str]]:
    """503 only for what a replica cannot serve without (the database, migrations at
    head). Redis is not one of those: without it rate limits are let through and the
    database budgets hold, so an unreachable Redis, or its breaker open, is `degraded`;
    a load balancer keeps the replica (and the fleet) in service."""
    database, redis = await asyncio.gather(
        _bounded(_database_problem(request), "database"),
        _bounded(_redis_problem(request), "redis"),
    )
    if database is not None:
        raise ProblemError(503, "not_ready", f"database: {database.code}", errors=[database])
    if redis is not None:
        return {"status": "degraded", "degraded": [f"redis: {redis.code}"]}
    return {"status": "ready"}


@router.get(
    "/metrics",
    summary="Prometheus metrics (METRICS_TOKEN bearer, or admin)",
    response_class=Response,
    responses=problem_responses(401, 403),
)
async def metrics(request: Request) -> Response:
    await admin_principal(request, extra_secret=request.app.state.settings.metrics_token)
    async with request.app.state.sessionmaker() as session:
        counts = await stats.job_counts(session)
        pending = await deliveries.oldest_pending_ages(session)
    for status in JobStatus:
        JOBS_BY_STATUS.labels(status).set(counts.get(status, 0))
    pool = request.app.state.engine.pool
    DB_POOL_CHECKED_OUT.set(pool.checkedout() if hasattr(pool, "checkedout") else 0)
    EVENT_LOOP_LAG.set(request.app.state.loop_lag.take_worst())
    OUTBOUND_OLDEST_PENDING.clear()  # endpoints with nothing pending drop out
    for endpoint_id, age in pending.items():
        OUTBOUND_OLDEST_PENDING.labels(str(endpoint_id)).set(age)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
