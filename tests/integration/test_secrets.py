"""Secrets stay secret: over a job's whole life with every logger at DEBUG, neither the
Seedance key, a bearer token, the JWT secret, the webhook secret nor the media URL secret
appears in any log line, response body or header (errors included), or stored row."""

import logging

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness import SEEDANCE_TEST_KEY, running_stack, wait_until


async def test_no_secret_reaches_logs_responses_or_the_database(
    database_url: str, db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def keep(response: httpx.Response) -> None:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()
            seen.append(response.text)
        seen.append(repr(response.headers.multi_items()))

    async with running_stack(
        database_url,
        sim_config={"generate_5xx_rate": 0.5, "task_failure_rate": 0.3, "seed": 3},
        confirm_success_with_status=True,
        dispatcher_enabled=True,
        reconciler_enabled=True,
        log_level="DEBUG",
    ) as stack:
        for name in ("", "httpx", "httpcore", "sqlalchemy.engine", "uvicorn", "app"):
            caplog.set_level(logging.DEBUG, logger=name)
        stack.http.event_hooks["response"].append(keep)
        headers = stack.headers()
        token = headers["Authorization"].removeprefix("Bearer ")
        secrets = {
            "seedance key": SEEDANCE_TEST_KEY,
            "bearer token": token,
            "jwt secret": stack.settings.jwt_secret.get_secret_value(),
            "webhook secret": stack.settings.webhook_secret.get_secret_value(),
            "media URL secret": stack.settings.media_url_secret.get_secret_value(),
        }
        jobs = [await stack.create_job(prompt=f"variant {i}") for i in range(4)]
        async with stack.http.stream(
            "GET", f"/jobs/{jobs[0]['id']}/events", headers=headers
        ) as stream:
            seen.append(await stream.aread() and stream.text)  # closes once the job is done

        async def done() -> bool:
            return all(j.status in {"succeeded", "failed"} for j in await stack.jobs())

        await wait_until(done)
        for path in ("/jobs", f"/jobs/{jobs[1]['id']}", "/me/usage", "/readyz"):
            assert (await stack.http.get(path, headers=headers)).status_code == 200
        for job in jobs:  # the stored videos, through their signed URLs
            await stack.http.get(
                f"/jobs/{job['id']}/content", headers=headers, follow_redirects=True
            )
        # errors: a bad body carrying the token (422s never echo input), a tampered token, the
        # Seedance key presented as a token, someone else's job
        await stack.http.post("/jobs", json={"prompt": token, "duration": 99}, headers=headers)
        await stack.http.get("/jobs", headers={"Authorization": f"Bearer {token}x"})
        await stack.http.get("/jobs", headers={"Authorization": f"Bearer {SEEDANCE_TEST_KEY}"})
        await stack.http.get(f"/jobs/{jobs[2]['id']}", headers=stack.headers("bob"))
        assert {j.status for j in await stack.jobs()} >= {"succeeded"}

    async with db_engine.connect() as conn:
        stored = [
            repr(row)
            for table in ("jobs", "job_events", "batches")
            for row in (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
        ]
    logs = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    assert len(logs) > 50 and len(seen) > 20 and stored  # everything really was captured
    for what, secret in secrets.items():
        for where, texts in (("logs", logs), ("responses", seen), ("database", stored)):
            leaks = [t for t in texts if secret in t]
            assert not leaks, f"the {what} appears in the {where}: {leaks[0][:200]}"
