"""Secrets stay secret: over a job's whole life with every logger at DEBUG, neither the
Seedance key, a bearer token, the JWT secret, the webhook secret, the media URL secret, an
outbound endpoint's signing secrets, Stripe's signing secret and a service API key (after
the one answer that shows each) nor the key that encrypts the secrets appears in any log
line, response body or header (errors included), or stored row."""

import asyncio
import logging

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from testkit.harness import SEEDANCE_TEST_KEY, running_stack, wait_until
from testkit.stripe_events import STRIPE_SECRET, send_stripe, stripe_event, stripe_signature
from testkit.webhook_receiver import Receiver, receiving

ADMIN_TOKEN = "admin-token-for-the-secrets-test-0123456789"


async def test_no_secret_reaches_logs_responses_or_the_database(
    database_url: str, db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    receiver = Receiver()

    async def keep(response: httpx.Response) -> None:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()
            seen.append(response.text)
        seen.append(repr(response.headers.multi_items()))

    async with (
        running_stack(
            database_url,
            sim_config={"generate_5xx_rate": 0.5, "task_failure_rate": 0.3, "seed": 3},
            confirm_success_with_status=True,
            dispatcher_enabled=True,
            reconciler_enabled=True,
            log_level="DEBUG",
            admin_token=ADMIN_TOKEN,
            outbound_enabled=True,
            stripe_webhook_secret=STRIPE_SECRET,
        ) as stack,
        receiving(receiver) as hook,
    ):
        for name in ("", "httpx", "httpcore", "sqlalchemy.engine", "uvicorn", "app"):
            caplog.set_level(logging.DEBUG, logger=name)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=stack.url) as shown_once:  # not kept
            endpoint = (
                await shown_once.post("/admin/webhook-endpoints", json={"url": hook}, headers=admin)
            ).json()
            rotated = await shown_once.post(
                f"/admin/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=admin
            )
            api_key = (
                await shown_once.post("/admin/api-keys", json={"subject": "svc:cms"}, headers=admin)
            ).json()["key"]
        receiver.secrets = [endpoint["secret"], rotated.json()["secret"]]
        stack.http.event_hooks["response"].append(keep)
        service = {"Authorization": f"Bearer {api_key}"}
        assert (
            await stack.http.post("/jobs", json={"prompt": "x"}, headers=service)
        ).status_code == 202
        await stack.http.get("/admin/stats", headers=service)  # a 403
        await stack.http.get("/jobs", headers={"Authorization": f"Bearer {api_key}x"})  # a 401
        headers = stack.headers()
        token = headers["Authorization"].removeprefix("Bearer ")
        secrets = {
            "seedance key": SEEDANCE_TEST_KEY,
            "bearer token": token,
            "jwt secret": stack.settings.jwt_secret.get_secret_value(),
            "webhook secret": stack.settings.callback_secret.get_secret_value(),
            "media URL secret": stack.settings.media_url_secret.get_secret_value(),
            "outbound secrets key": stack.settings.outbound_secrets_key.get_secret_value(),
            "admin token": ADMIN_TOKEN,
            "Stripe's signing secret": STRIPE_SECRET,
            "Stripe's signing secret, unprefixed": STRIPE_SECRET.removeprefix("whsec_"),
            "API key": api_key,
            "API key, unprefixed": api_key.removeprefix("sbff_live_"),
        }
        for number, secret in enumerate(receiver.secrets):
            secrets[f"endpoint secret {number}"] = secret
            secrets[f"endpoint secret {number}, unprefixed"] = secret.removeprefix("whsec_")
        checkout = stripe_event("cs_secrets", {"subject": "alice", "credits": "1000"})
        paid = await send_stripe(stack, checkout)  # a top-up, and a forged one
        assert paid.status_code == 200, paid.text
        forged = await send_stripe(stack, checkout, stripe_signature(checkout, "whsec_x"))
        assert forged.status_code == 400
        jobs = [await stack.create_job(prompt=f"variant {i}") for i in range(4)]
        async with stack.http.stream(
            "GET", f"/jobs/{jobs[0]['id']}/events", headers=headers
        ) as stream:
            seen.append(await stream.aread() and stream.text)  # closes once the job is done

        async def done() -> bool:
            return all(j.status in {"succeeded", "failed"} for j in await stack.jobs())

        await wait_until(done)
        await wait_until(lambda: asyncio.sleep(0, len(receiver.accepted()) >= 12))
        await stack.http.get(f"/admin/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin)
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
            for table in (
                "jobs",
                "job_events",
                "batches",
                "outbound_endpoints",
                "outbound_messages",
                "outbound_attempts",
                "api_keys",
            )
            for row in (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
        ]
    logs = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    assert len(logs) > 50 and len(seen) > 20 and stored  # everything really was captured
    for what, secret in secrets.items():
        for where, texts in (("logs", logs), ("responses", seen), ("database", stored)):
            leaks = [t for t in texts if secret in t]
            assert not leaks, f"the {what} appears in the {where}: {leaks[0][:200]}"
