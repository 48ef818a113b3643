"""Probes for orchestrators and scrapers: liveness, readiness, Prometheus metrics."""

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.auth import admin_principal
from app.api.errors import problem_responses
from app.api.state import services
from app.jobs import account_forecast, scheduler, stats
from app.jobs.states import JobStatus
from app.kit.errors import ProblemError
from app.moderation import review
from app.ops.health import bounded, database_problem, redis_problem
from app.ops.metrics import (
    DB_POOL_CHECKED_OUT,
    EVENT_LOOP_LAG,
    JOBS_BY_STATUS,
    MODERATION_QUEUE_OLDEST,
    MODERATION_QUEUE_OPEN,
    OUTBOUND_OLDEST_PENDING,
    QUEUE_OLDEST_AGE,
    QUEUED_BY_PLAN,
    UPSTREAM_ACCOUNT_CREDITS_LEFT,
    UPSTREAM_ACCOUNT_DAYS_LEFT,
    UPSTREAM_ACCOUNT_PAUSED,
)
from app.outbound import deliveries

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


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
    state = services(request)
    limits = state.rate_limits
    database, redis = await asyncio.gather(
        bounded(database_problem(state.engine, state.migration_head), "database"),
        bounded(redis_problem(limits.breaker, limits.windows.check), "redis")
        if state.settings.redis_url
        else asyncio.sleep(0),
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
    await admin_principal(request, extra_secret=services(request).settings.metrics_token)
    async with services(request).sessionmaker() as session:
        counts = await stats.job_counts(session)
        pending = await deliveries.oldest_pending_ages(session)
        waiting, oldest = await scheduler.waiting_by(session, "plan")
        cases, oldest_case = await review.open_cases(session)
        account = await scheduler.learned_capacity(session)
        outlook = await account_forecast.forecast(session, by_day=False)
    QUEUED_BY_PLAN.clear()  # plans with nothing waiting drop out
    for plan, count in waiting.items():
        QUEUED_BY_PLAN.labels(plan).set(count)
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0
    QUEUE_OLDEST_AGE.set(age)
    MODERATION_QUEUE_OPEN.set(cases)
    UPSTREAM_ACCOUNT_PAUSED.clear()
    pause = scheduler.pause_of(account)
    for reason in scheduler.PauseReason:
        UPSTREAM_ACCOUNT_PAUSED.labels(reason.value).set(
            int(pause is not None and pause.reason == reason)
        )
    nan = float("nan")
    UPSTREAM_ACCOUNT_CREDITS_LEFT.set(nan if outlook.remaining is None else outlook.remaining)
    UPSTREAM_ACCOUNT_DAYS_LEFT.set(nan if outlook.days_left is None else outlook.days_left)
    now = datetime.now(UTC)
    MODERATION_QUEUE_OLDEST.set((now - oldest_case).total_seconds() if oldest_case else 0)
    for status in JobStatus:
        JOBS_BY_STATUS.labels(status).set(counts.get(status, 0))
    pool = services(request).engine.pool
    DB_POOL_CHECKED_OUT.set(pool.checkedout() if hasattr(pool, "checkedout") else 0)
    EVENT_LOOP_LAG.set(services(request).loop_lag.take_worst())
    OUTBOUND_OLDEST_PENDING.clear()  # endpoints with nothing pending drop out
    for endpoint_id, age in pending.items():
        OUTBOUND_OLDEST_PENDING.labels(str(endpoint_id)).set(age)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
