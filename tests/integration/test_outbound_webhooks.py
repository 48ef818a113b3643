"""Signed outbound webhooks: every job outcome reaches the product's server, verified with
the `standardwebhooks` library, through receivers that are down, failing, hanging or
redirecting, across secret rotation, a SIGKILL and two replicas."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import webhooks as standardwebhooks_module

from app.db.models import JobEvent, OutboundEndpoint
from app.outbound.states import EventType
from tests.harness import (
    Stack,
    bound_socket,
    running_stack,
    serve,
    url_of,
    wait_until,
)
from tests.webhook_receiver import ERROR_BODY, Mode, Receiver, verifies

ADMIN_TOKEN = "admin-token-for-webhook-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@asynccontextmanager
async def receiving(receiver: Receiver, sock: socket.socket | None = None) -> AsyncIterator[str]:
    async with serve(receiver.app(), sock) as url:
        try:
            yield f"{url}/hook"
        finally:
            receiver.release.set()


async def add_endpoint(stack: Stack, url: str, **body: Any) -> dict[str, Any]:
    response = await stack.http.post(
        "/admin/webhook-endpoints", json={"url": url, **body}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["secret"].startswith("whsec_")
    return created


async def deliveries(stack: Stack, endpoint_id: str) -> list[dict[str, Any]]:
    response = await stack.http.get(
        f"/admin/webhook-endpoints/{endpoint_id}/deliveries",
        params={"limit": 100},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture(scope="module")
async def admin_api(database_url: str) -> AsyncIterator[Stack]:
    """The service with an admin token, its loops off."""
    async with running_stack(database_url, admin_token=ADMIN_TOKEN) as stack:
        yield stack


def stack_with_webhooks(database_url: str, **overrides: Any) -> Any:
    """A stack whose delivery worker runs (settings as the tests' harness makes them)."""
    return running_stack(
        database_url, **{"admin_token": ADMIN_TOKEN, "outbound_enabled": True, **overrides}
    )


async def test_endpoints_are_managed_by_admins_and_their_secret_is_shown_once(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(database_url, admin_token=ADMIN_TOKEN) as stack:
        url = "https://hooks.example.com/seedance"
        assert (
            await stack.http.post(
                "/admin/webhook-endpoints", json={"url": url}, headers=stack.headers()
            )
        ).status_code == 403
        created = await add_endpoint(
            stack, url, events=["job.succeeded", "job.failed"], description="rewards"
        )
        endpoint_id = created["id"]
        read = (
            await stack.http.get(f"/admin/webhook-endpoints/{endpoint_id}", headers=ADMIN)
        ).json()
        assert "secret" not in read and read["events"] == ["job.failed", "job.succeeded"]
        assert read["enabled"] and read["include_prompts"] and read["failing_since"] is None
        listed = (await stack.http.get("/admin/webhook-endpoints", headers=ADMIN)).json()
        assert [e["id"] for e in listed] == [endpoint_id]
        assert created["secret"] not in str(listed)

        changed = await stack.http.patch(
            f"/admin/webhook-endpoints/{endpoint_id}",
            json={"events": ["batch.completed"], "enabled": False, "include_prompts": False},
            headers=ADMIN,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["events"] == ["batch.completed"] and not changed.json()["enabled"]
        test = await stack.http.post(f"/admin/webhook-endpoints/{endpoint_id}/test", headers=ADMIN)
        assert (test.status_code, test.json()["code"]) == (409, "webhook_endpoint_disabled")

        async with db_engine.connect() as conn:  # stored encrypted, never in clear
            sealed = await conn.scalar(select(OutboundEndpoint.secret))
        assert sealed and created["secret"] not in sealed
        assert created["secret"].removeprefix("whsec_") not in sealed

        gone = await stack.http.delete(f"/admin/webhook-endpoints/{endpoint_id}", headers=ADMIN)
        assert gone.status_code == 204
        missing = await stack.http.get(f"/admin/webhook-endpoints/{endpoint_id}", headers=ADMIN)
        assert (missing.status_code, missing.json()["code"]) == (404, "webhook_endpoint_not_found")


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/x", "url_not_https"),
        ("https://10.0.0.1/x", "url_host_not_public"),
        ("https://169.254.169.254/latest/meta-data", "url_host_not_public"),
        ("https://[::ffff:10.0.0.1]/x", "url_host_not_public"),
        ("https://db.internal/x", "url_host_not_public"),
        ("https://user:pw@hooks.example.com/x", "url_has_credentials"),
        ("ftp://hooks.example.com/x", "url_not_https"),
    ],
)
async def test_endpoint_urls_must_be_public_https(admin_api: Stack, url: str, code: str) -> None:
    response = await admin_api.http.post(
        "/admin/webhook-endpoints", json={"url": url}, headers=ADMIN
    )
    assert response.status_code == 422, response.text
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("url", code)]


async def expected_events(engine: AsyncEngine) -> set[tuple[str, str, int | None]]:
    """(type, job id, sequence) of every job move recorded."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(JobEvent))).all()
    return {(f"job.{e.to_status}", str(e.job_id), e.id) for e in rows}


def received_events(receiver: Receiver) -> list[tuple[str, str, int | None]]:
    out = []
    for delivery in receiver.unique().values():
        data = delivery.payload["data"]
        if "job" in data:
            out.append((delivery.payload["type"], data["job"]["id"], data["sequence"]))
        else:
            out.append((delivery.payload["type"], data["batch"]["id"], None))
    return out


def assert_duplicates_share_their_id(receiver: Receiver) -> None:
    """A message sent twice has one webhook-id and one body; two messages never share one."""
    bodies: dict[str, set[str]] = {}
    for delivery in receiver.accepted():
        bodies.setdefault(delivery.webhook_id, set()).add(delivery.body)
    assert all(len(b) == 1 for b in bodies.values())


async def test_every_event_arrives_through_a_receiver_down_then_failing_then_up(
    database_url: str, db_engine: AsyncEngine
) -> None:
    receiver = Receiver()
    sock = bound_socket()  # bound, not listening: connections are refused
    async with stack_with_webhooks(
        database_url, dispatcher_enabled=True, outbound_retry_schedule=[0.3] * 200
    ) as stack:
        endpoint = await add_endpoint(stack, f"{url_of(sock)}/hook")
        receiver.secrets = [endpoint["secret"]]
        jobs = [await stack.create_job(prompt=f"a lighthouse, take {i}") for i in range(3)]
        batch = await stack.http.post(
            "/jobs/batch",
            json={"prompts": ["a fox at dawn", "a fox at dusk"]},
            headers=stack.headers(),
        )
        assert batch.status_code == 202, batch.text

        async def all_done() -> bool:
            return all(j.status in {"succeeded", "failed"} for j in await stack.jobs())

        await wait_until(all_done, within=60)
        deleted = await stack.http.delete(f"/jobs/{jobs[0]['id']}", headers=stack.headers())
        assert deleted.status_code == 204
        history = await deliveries(stack, endpoint["id"])
        assert history and all(d["status"] == "pending" for d in history)
        assert {a["result"] for d in history for a in d["history"]} == {"network_error"}

        receiver.mode = Mode.ERROR
        async with receiving(receiver, sock):
            await wait_until(lambda: asyncio.sleep(0, len(receiver.received) >= 5))
            receiver.mode = Mode.OK
            expected = await expected_events(db_engine)
            expected.add(("job.deleted", jobs[0]["id"], None))
            expected.add(("batch.completed", batch.json()["id"], None))

            async def all_arrived() -> bool:
                return set(received_events(receiver)) == expected

            await wait_until(all_arrived, within=60)
            assert len(received_events(receiver)) == len(expected)  # one message per event
            assert_duplicates_share_their_id(receiver)
            assert all(d.verified_by == [0] for d in receiver.received)

            failed_then_delivered = [
                d for d in await deliveries(stack, endpoint["id"]) if len(d["history"]) > 1
            ]
            assert failed_then_delivered
            for delivery in failed_then_delivered:
                assert delivery["status"] == "delivered"
                results = [a["result"] for a in delivery["history"]]
                assert results[-1] == "delivered" and set(results[:-1]) <= {
                    "network_error",
                    "http_error",
                }
                for attempt in delivery["history"]:
                    if attempt["result"] == "http_error":
                        assert attempt["status_code"] == 500
                        assert attempt["response_body"] == ERROR_BODY[:1024]
                        assert attempt["latency_ms"] > 0

    done = receiver.unique()[next(iter(receiver.unique()))]
    succeeded = next(d for d in receiver.accepted() if d.payload["type"] == EventType.JOB_SUCCEEDED)
    job = succeeded.payload["data"]["job"]
    assert job["video_url"] and job["media"]["sha256"]  # the job as JobOut shows it
    assert succeeded.payload["data"]["owner"] == "alice"
    # a receiver's replay check: the same delivery, its timestamp older than the tolerance
    real_datetime = standardwebhooks_module.datetime

    class Later(real_datetime):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return real_datetime.now(tz) + timedelta(minutes=6)

    assert verifies(receiver.secrets[0], done.body, done.headers)
    with mock.patch.object(standardwebhooks_module, "datetime", Later):
        assert not verifies(receiver.secrets[0], done.body, done.headers)
