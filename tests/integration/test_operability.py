"""Health, readiness, metrics, request ids, docs protection, admin search and stats,
graceful shutdown."""

import asyncio
import base64
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asgi_correlation_id import CorrelationIdFilter
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Job
from app.jobs.budget import today_started_at
from app.jobs.callbacks import callback_signature
from testkit.databases import fresh_postgres_database
from testkit.harness import CLOSED_PORT_DB, Stack, bearer, running_stack, wait_until

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
METRICS_TOKEN = "metrics-token-for-tests-012345"


async def test_healthz_and_readyz(api: Stack) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    assert (await api.http.get("/readyz")).json() == {"status": "ready"}


async def test_readyz_with_redis(database_url: str) -> None:
    async with running_stack(database_url, redis_url="redis://127.0.0.1:6379/0") as stack:
        assert (await stack.http.get("/readyz")).status_code == 200
    # the service runs without Redis (limits let through, budgets hold): degraded, not down,
    # or a Redis outage would take every replica out of the load balancer
    async with running_stack(database_url, redis_url="redis://127.0.0.1:1/0") as stack:
        response = await stack.http.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "degraded", "degraded": ["redis: unreachable"]}


async def test_readyz_reports_a_database_that_is_down(database_url: str) -> None:
    async with running_stack(CLOSED_PORT_DB) as stack:
        response = await stack.http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["code"] == "not_ready"
        assert response.json()["errors"][0]["field"] == "database"
        assert response.json()["errors"][0]["code"] == "unreachable"
        # and the API answers 503 problem+json instead of crashing
        jobs = await stack.http.get("/jobs", headers=stack.headers())
        assert jobs.status_code == 503
        assert jobs.headers["content-type"] == "application/problem+json"
        assert jobs.json()["code"] == "database_unavailable"
        assert jobs.headers["retry-after"] == "5"


async def test_readyz_reports_a_database_that_is_not_migrated() -> None:
    async with (
        fresh_postgres_database("seedance_bff_unmigrated") as url,
        running_stack(url) as stack,
    ):
        response = await stack.http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] in {"not_migrated", "unreachable"}


async def test_metrics_after_a_jobs_life(database_url: str) -> None:
    async with running_stack(
        database_url, dispatcher_enabled=True, metrics_token=METRICS_TOKEN, admin_token=ADMIN_TOKEN
    ) as stack:
        job = await stack.create_job()
        await wait_until(lambda: _status_is(stack, job["id"], "succeeded"))
        scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        response = await stack.http.get("/metrics", headers=scraper)
        assert response.status_code == 200
        text = response.text
        assert 'seedance_jobs{status="succeeded"} 1.0' in text
        assert 'seedance_jobs{status="queued"} 0.0' in text
        for line in [
            r'seedance_upstream_calls_total\{endpoint="generate",outcome="200"\} [1-9]',
            r'seedance_job_submissions_total\{result="accepted"\} [1-9]',
            r'seedance_webhook_deliveries_total\{result="applied"\} [1-9]',
            r'http_requests_total\{handler="/jobs",method="POST",status="2xx"\} [1-9]',
            r'http_request_duration_seconds_bucket\{handler="/jobs/\{job_id\}",le="0.1",method="GET"\}',
            r"seedance_db_pool_checked_out [0-9]",  # this scrape's own session is back by then
            r"seedance_event_loop_lag_seconds [0-9]",
            r'seedance_gc_pause_seconds_count\{generation="0"\} [1-9]',
        ]:
            assert re.search(line, text), line
        assert (await stack.http.get("/metrics")).status_code == 401
        assert (await stack.http.get("/metrics", headers=stack.headers())).status_code == 403
        admin = bearer(stack.settings, "ops", admin=True)
        assert (await stack.http.get("/metrics", headers=admin)).status_code == 200


async def _status_is(stack: Stack, job_id: str, status: str) -> bool:
    response = await stack.http.get(f"/jobs/{job_id}", headers=stack.headers())
    return response.json()["status"] == status


async def test_request_ids_are_accepted_generated_and_logged(
    api: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(CorrelationIdFilter())
    caplog.set_level(logging.INFO, logger="app.requests")
    given = await api.http.get("/jobs", headers={**api.headers(), "X-Request-ID": "req-abc.123"})
    assert given.headers["x-request-id"] == "req-abc.123"
    generated = await api.http.get("/jobs", headers=api.headers())
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    hostile = await api.http.get("/jobs", headers={**api.headers(), "X-Request-ID": "a b <script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])

    def request_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "app.requests"]

    # the line is written once the response has gone out
    await wait_until(lambda: asyncio.sleep(0, len(request_lines()) == 3))
    lines = request_lines()
    assert [r.correlation_id for r in lines] == [  # type: ignore[attr-defined]
        "req-abc.123",
        generated.headers["x-request-id"],
        hostile.headers["x-request-id"],
    ]
    assert all((r.route, r.status, r.user) == ("/jobs", 200, "alice") for r in lines)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_docs_served_only_to_admins(database_url: str, path: str) -> None:
    async with running_stack(database_url, docs_access="admin", admin_token=ADMIN_TOKEN) as stack:
        anonymous = await stack.http.get(path)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        basic = base64.b64encode(f"anyone:{ADMIN_TOKEN}".encode()).decode()
        assert (
            await stack.http.get(path, headers={"Authorization": f"Basic {basic}"})
        ).status_code == 200
        wrong = base64.b64encode(b"anyone:guess").decode()
        assert (
            await stack.http.get(path, headers={"Authorization": f"Basic {wrong}"})
        ).status_code == 401
        assert (await stack.http.get(path, headers=stack.headers())).status_code == 403
        admin = bearer(stack.settings, "ops", admin=True)
        assert (await stack.http.get(path, headers=admin)).status_code == 200


async def test_docs_can_be_public_or_off(database_url: str) -> None:
    async with running_stack(database_url, docs_access="public") as stack:
        assert (await stack.http.get("/docs")).status_code == 200
    async with running_stack(database_url, docs_access="off") as stack:
        assert (await stack.http.get("/docs")).status_code == 404
        assert (await stack.http.get("/openapi.json")).status_code == 404


async def _seed_jobs(stack: Stack, db_engine: AsyncEngine) -> dict[str, list[str]]:
    """Jobs with known outcomes and timings, written straight into the rows."""
    now = datetime.now(UTC)
    ids: dict[str, list[str]] = {"alice": [], "bob": []}
    for owner, count in (("alice", 6), ("bob", 4)):
        for i in range(count):
            ids[owner].append(
                (await stack.create_job(owner, prompt=f"{owner} {i}", duration=5))["id"]
            )
    # alice: 4 succeeded in 10, 20, 30, 40 s (3 by webhook, 1 by reconciler), 1 failed, 1 queued
    # bob: 1 succeeded in 100 s by webhook, 3 queued
    plan = [
        ("alice", 0, "succeeded", 10, "webhook"),
        ("alice", 1, "succeeded", 20, "webhook"),
        ("alice", 2, "succeeded", 30, "webhook"),
        ("alice", 3, "succeeded", 40, "reconciler"),
        ("alice", 4, "failed", 50, "webhook"),
        ("bob", 0, "succeeded", 100, "webhook"),
    ]
    async with db_engine.begin() as conn:
        for owner, index, status, seconds, source in plan:
            created = now - timedelta(hours=1)
            await conn.execute(
                update(Job)
                .where(Job.id == uuid.UUID(ids[owner][index]))
                .values(
                    status=status,
                    created_at=created,
                    finished_at=created + timedelta(seconds=seconds),
                    resolved_by=source,
                    upstream_task_id=f"task-{owner}-{index}",
                )
            )
    return ids


async def test_admin_search_and_stats(api: Stack, db_engine: AsyncEngine) -> None:
    ids = await _seed_jobs(api, db_engine)
    admin = bearer(api.settings, "ops", admin=True)

    async def search(**params: object) -> list[str]:
        found, cursor = [], None
        while True:
            query = {**params, "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await api.http.get("/admin/jobs", params=query, headers=admin)).json()
            found += [item["id"] for item in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                return found

    assert sorted(await search()) == sorted(ids["alice"] + ids["bob"])
    assert sorted(await search(user="bob")) == sorted(ids["bob"])
    assert sorted(await search(status="succeeded", user="alice")) == sorted(ids["alice"][:4])
    assert await search(upstream_task_id="task-bob-0") == [ids["bob"][0]]
    recent = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    assert sorted(await search(created_after=recent)) == sorted(ids["alice"][5:] + ids["bob"][1:])
    assert sorted(await search(created_before=recent, status="failed")) == [ids["alice"][4]]
    item = (
        await api.http.get("/admin/jobs", params={"upstream_task_id": "task-bob-0"}, headers=admin)
    ).json()["items"][0]
    assert (item["owner"], item["resolved_by"]) == ("bob", "webhook")

    async def committed_today() -> int:
        """Every job here costs 5 s x 2 credits, the queued ones too; "today" is the UTC
        day, so jobs created "an hour ago" at 00:30 UTC are yesterday's."""
        async with db_engine.connect() as conn:
            jobs = await conn.scalar(
                select(func.count()).where(Job.created_at >= today_started_at())
            )
        return 10 * jobs

    spent_before = await committed_today()
    stats = (await api.http.get("/admin/stats", headers=admin)).json()
    spent_after = await committed_today()  # the same, unless midnight came in between
    assert stats["jobs_by_status"] == {"succeeded": 5, "failed": 1, "queued": 4}
    assert stats["success_rate"] == pytest.approx(5 / 6)
    assert stats["median_seconds_to_success"] == pytest.approx(30, rel=0.025)  # histogram
    assert stats["p95_seconds_to_success"] == pytest.approx(100, rel=0.025)
    assert stats["resolved_by"] == {"webhook": 5, "reconciler": 1}
    assert stats["callback_ratio"] == pytest.approx(5 / 6)
    assert stats["credits_spent_today"] in {spent_before, spent_after}


async def test_admin_routes_refuse_non_admins(api: Stack) -> None:
    assert (await api.http.get("/admin/jobs")).status_code == 401
    assert (await api.http.get("/admin/stats", headers=api.headers())).status_code == 403
    forged = {"Authorization": "Bearer " + "x" * 40}
    assert (await api.http.get("/admin/stats", headers=forged)).status_code == 401


async def test_shutdown_lets_submissions_in_flight_finish(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(
        database_url, sim_config={"generate_latency_seconds": 0.5}, dispatcher_enabled=True
    ) as stack:
        job = await stack.create_job()
        await wait_until(lambda: _sim_received(stack))
    async with db_engine.connect() as conn:
        status, task = (
            await conn.execute(
                Job.__table__.select()
                .with_only_columns(Job.status, Job.upstream_task_id)
                .where(Job.id == uuid.UUID(job["id"]))
            )
        ).one()
    assert status == "running" and task is not None  # recorded, not left "unknown"


async def _sim_received(stack: Stack) -> bool:
    return stack.sim.calls["generate"] == 1


async def test_path_values_cannot_forge_log_lines(
    api: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.requests")
    job = await api.create_job()
    forged = "x%0A2026-01-01 INFO app.requests: GET admin 200 user=admin"
    assert (await api.http.get(f"/jobs/{forged}", headers=api.headers())).status_code == 404
    assert (await api.http.post(f"/webhooks/seedance/{forged}", json={})).status_code == 404
    assert (await api.http.get(f"/jobs/{job['id']}", headers=api.headers())).status_code == 200

    def job_fields() -> list[str]:
        return [r.job_id for r in caplog.records if r.name == "app.requests"]  # type: ignore[attr-defined]

    await wait_until(lambda: asyncio.sleep(0, len(job_fields()) == 4))
    # job paths take UUIDs only: the forged text is a 404 that names no job
    assert job_fields() == [None, None, None, job["id"]]
    assert not any("\n" in r.getMessage() for r in caplog.records)


async def test_a_client_hanging_up_mid_body_is_not_a_server_error(
    api: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """wrk does this at the end of every benchmark run: it was logged as an unhandled 500."""
    caplog.set_level(logging.INFO)
    job_id = uuid.uuid4()
    host, port = api.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /webhooks/seedance/{job_id}?sig={callback_signature(api.settings, job_id)}"
        f" HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000\r\n\r\n{"task_id": '.encode()
    )
    await writer.drain()
    # no wait: the server handles the bytes sent (the request begins, its body is awaited)
    # before it sees the connection close
    writer.close()

    def request_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "app.requests"]

    await wait_until(lambda: asyncio.sleep(0, bool(request_lines())))
    assert [(r.route, r.status) for r in request_lines()] == [  # type: ignore[attr-defined]
        ("/webhooks/seedance/{job_id}", 499)
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
