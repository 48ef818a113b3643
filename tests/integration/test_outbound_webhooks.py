"""Signed outbound webhooks: every job outcome reaches the product's server, verified with
the `standardwebhooks` library, through receivers that are down, failing, hanging or
redirecting, across secret rotation, a SIGKILL and two replicas."""

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import webhooks as standardwebhooks_module

from app.db.migrate import upgrade
from app.db.models import JobEvent, OutboundEndpoint, OutboundMessage
from app.outbound.sender import Outcome
from app.outbound.states import AttemptResult, EventType
from app.outbound.worker import OutboundWorker
from testkit.harness import (
    MEDIA_ROOT,
    Stack,
    bearer,
    bound_socket,
    free_port,
    make_settings,
    running_stack,
    service_env,
    start_service,
    url_of,
    wait_until,
)
from testkit.webhook_receiver import ERROR_BODY, Mode, Receiver, receiving, verifies

ADMIN_TOKEN = "admin-token-for-webhook-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


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
            # the deleted job's messages still waiting when it was deleted go without its
            # prompt, and none is kept in our database; the others carry theirs
            for delivery in receiver.unique().values():
                job = delivery.payload["data"].get("job")
                if job is not None:
                    assert (job["prompt"] is None) == (job["id"] == jobs[0]["id"])
            async with db_engine.connect() as conn:
                payloads = (await conn.execute(select(OutboundMessage.payload))).scalars().all()
            assert not [p for p in payloads if jobs[0]["prompt"] in p]
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


async def test_a_rotated_secret_keeps_signing_through_its_grace_period(
    database_url: str,
) -> None:
    receiver = Receiver()
    async with stack_with_webhooks(database_url) as stack, receiving(receiver) as url:
        endpoint = await add_endpoint(stack, url, events=["job.queued"])
        path = f"/admin/webhook-endpoints/{endpoint['id']}"
        rotated = await stack.http.post(f"{path}/rotate-secret", headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        old, new = endpoint["secret"], rotated.json()["secret"]
        assert new != old and new.startswith("whsec_")
        receiver.secrets = [old, new]  # index 0: a receiver still on the old secret
        for _ in range(3):
            await stack.create_job()
        await wait_until(lambda: asyncio.sleep(0, len(receiver.accepted()) == 3))
        # within the grace period, a receiver holding only one of them accepts every delivery
        assert all(d.verified_by == [0, 1] for d in receiver.received)

        # a rotation without grace: the secret rotated out signs nothing any more
        again = await stack.http.post(
            f"{path}/rotate-secret", json={"grace_seconds": 0}, headers=ADMIN
        )
        newest = again.json()["secret"]
        receiver.secrets = [new, newest]
        receiver.received.clear()
        await stack.create_job()
        await wait_until(lambda: asyncio.sleep(0, len(receiver.accepted()) == 1))
        assert receiver.received[0].verified_by == [1]


async def test_a_redirect_is_not_followed_and_a_hanging_receiver_is_cut_and_retried(
    database_url: str,
) -> None:
    receiver = Receiver(mode=Mode.REDIRECT)
    async with (
        stack_with_webhooks(
            database_url, outbound_timeout_seconds=0.5, outbound_retry_schedule=[0.1] * 50
        ) as stack,
        receiving(receiver) as url,
    ):
        endpoint = await add_endpoint(stack, url)
        receiver.secrets = [endpoint["secret"]]
        test = await stack.http.post(
            f"/admin/webhook-endpoints/{endpoint['id']}/test", headers=ADMIN
        )
        assert test.status_code == 202 and test.json()["type"] == "webhook.test"
        await wait_until(lambda: asyncio.sleep(0, len(receiver.received) >= 2))
        receiver.mode = Mode.HANG
        await wait_until(lambda: asyncio.sleep(0, len(receiver.received) >= 4))
        receiver.mode = Mode.OK
        await wait_until(lambda: asyncio.sleep(0, len(receiver.accepted()) == 1))
        (delivery,) = await deliveries(stack, endpoint["id"])
        assert delivery["id"] == test.json()["id"] and delivery["status"] == "delivered"
        results = [(a["result"], a["status_code"]) for a in delivery["history"]]
        assert ("http_error", 307) in results and ("timeout", None) in results
        redirect = next(a for a in delivery["history"] if a["status_code"] == 307)
        assert "not followed" in redirect["error"]
        # every request reached this receiver (none followed the redirect), with one id
        assert {d.webhook_id for d in receiver.received} == {delivery["webhook_id"]}


async def test_an_answer_with_a_nul_byte_is_recorded_once_and_not_sent_again(
    database_url: str,
) -> None:
    """A receiver answering 200 with a NUL byte (an echo of binary input, say): the attempt
    is recorded, NUL replaced, and the message delivered once; before, storing the answer
    failed and the message was sent again at every lease, without end."""
    receiver = Receiver(mode=Mode.NUL)
    async with (
        stack_with_webhooks(database_url, outbound_timeout_seconds=0.5) as stack,
        receiving(receiver) as url,
    ):
        endpoint = await add_endpoint(stack, url)
        receiver.secrets = [endpoint["secret"]]
        test = await stack.http.post(
            f"/admin/webhook-endpoints/{endpoint['id']}/test", headers=ADMIN
        )

        async def delivered() -> bool:
            items = await deliveries(stack, endpoint["id"])
            return bool(items) and items[0]["status"] == "delivered"

        await wait_until(delivered)
        (delivery,) = await deliveries(stack, endpoint["id"])
    assert delivery["id"] == test.json()["id"] and len(delivery["history"]) == 1
    assert delivery["history"][0]["response_body"].startswith("ok\ufffd")
    assert len(receiver.received) == 1


async def test_an_endpoint_failing_too_long_is_disabled_and_an_admin_brings_it_back(
    database_url: str,
) -> None:
    receiver = Receiver(mode=Mode.ERROR)
    async with (
        stack_with_webhooks(
            database_url,
            outbound_disable_after_seconds=0.3,
            outbound_retry_schedule=[0.1, 0.1],
        ) as stack,
        receiving(receiver) as url,
    ):
        endpoint = await add_endpoint(stack, url, events=["job.queued"], include_prompts=False)
        receiver.secrets = [endpoint["secret"]]
        path = f"/admin/webhook-endpoints/{endpoint['id']}"
        job = await stack.create_job(prompt="a secret birthday surprise")

        async def disabled_after_one_more() -> bool:
            await stack.create_job()  # failing since the first attempt, and still failing
            return not (await stack.http.get(path, headers=ADMIN)).json()["enabled"]

        await wait_until(disabled_after_one_more, interval=0.1)
        state = (await stack.http.get(path, headers=ADMIN)).json()
        assert state["disabled_at"] and "500" in state["disabled_reason"]
        metrics = (await stack.http.get("/metrics", headers=ADMIN)).text
        assert "seedance_outbound_endpoints_disabled_total 1.0" in metrics
        assert (
            f'seedance_outbound_attempts_total{{endpoint="{endpoint["id"]}",result="http_error"}}'
            in metrics
        )
        assert f'seedance_outbound_oldest_pending_seconds{{endpoint="{endpoint["id"]}"}}' in metrics

        failed = [d for d in await deliveries(stack, endpoint["id"]) if d["status"] == "failed"]
        assert failed and all(len(d["history"]) == 3 for d in failed)  # 1 + the schedule's 2
        first = next(d for d in failed if d["job_id"] == job["id"])
        retry = await stack.http.post(f"{path}/deliveries/{first['id']}/retry", headers=ADMIN)
        assert (retry.status_code, retry.json()["code"]) == (409, "webhook_endpoint_disabled")

        receiver.mode = Mode.OK
        enabled = await stack.http.patch(path, json={"enabled": True}, headers=ADMIN)
        assert enabled.json()["enabled"] and enabled.json()["failing_since"] is None
        retry = await stack.http.post(f"{path}/deliveries/{first['id']}/retry", headers=ADMIN)
        assert retry.status_code == 202 and retry.json()["status"] == "pending"

        async def redelivered() -> bool:
            got = await stack.http.get(f"{path}/deliveries/{first['id']}", headers=ADMIN)
            return bool(got.json()["status"] == "delivered")

        await wait_until(redelivered)
        payload = next(d for d in receiver.accepted() if d.webhook_id == first["webhook_id"])
        assert payload.payload["data"]["job"]["prompt"] is None  # the endpoint opted out
        assert payload.payload["data"]["job"]["id"] == job["id"]


async def test_two_replicas_send_each_message_once(
    database_url: str, db_engine: AsyncEngine
) -> None:
    receiver = Receiver()
    async with (
        receiving(receiver) as url,
        stack_with_webhooks(database_url) as one,
        stack_with_webhooks(database_url) as two,
    ):
        endpoint = await add_endpoint(one, url, events=["job.queued", "job.canceled"])
        receiver.secrets = [endpoint["secret"]]
        created = await asyncio.gather(
            *(stack.create_job() for stack in (one, two) for _ in range(40))
        )
        for job in created[::4]:
            canceled = await two.http.post(f"/jobs/{job['id']}/cancel", headers=two.headers())
            assert canceled.status_code == 200, canceled.text
        expected = len(created) + len(created[::4])
        await wait_until(lambda: asyncio.sleep(0, len(receiver.unique()) == expected))
        async with db_engine.connect() as conn:
            attempts = (await conn.execute(select(OutboundMessage.attempts))).scalars().all()
    assert len(attempts) == expected and set(attempts) == {1}
    assert Counter(d.webhook_id for d in receiver.received).most_common(1)[0][1] == 1


async def test_a_sigkill_between_the_move_and_the_send_loses_nothing(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """The service runs as its own process and is SIGKILLed while its first attempt hangs;
    after a restart the message is sent again (same webhook-id) once its lease runs out."""
    receiver = Receiver(mode=Mode.HANG)
    port = free_port()
    settings = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "dispatcher_enabled": False,
        "reconciler_enabled": False,
        "media_worker_enabled": False,
        "media_root": MEDIA_ROOT,
        "outbound_poll_seconds": 0.05,
        "outbound_timeout_seconds": 1.0,
        "outbound_retry_schedule": [0.1],
    }
    env = service_env(settings)
    async with receiving(receiver) as url:
        service = await start_service(port, env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                response = await http.post(
                    "/admin/webhook-endpoints",
                    json={"url": url, "events": ["job.queued"]},
                    headers=ADMIN,
                )
                receiver.secrets = [response.json()["secret"]]
                job = await http.post(
                    "/jobs",
                    json={"prompt": "a kite over the dunes"},
                    headers=bearer(make_settings(database_url), "alice"),
                )
                assert job.status_code == 202, job.text
                await asyncio.wait_for(receiver.arrived.wait(), 30)  # the send is under way
                service.send_signal(signal.SIGKILL)
                await service.wait()
                receiver.mode = Mode.OK
                service = await start_service(port, env)
                await wait_until(lambda: asyncio.sleep(0, len(receiver.accepted()) == 1))

                async def recorded() -> bool:
                    async with db_engine.connect() as conn:
                        status = await conn.scalar(select(OutboundMessage.status))
                    return status == "delivered"

                await wait_until(recorded)
        finally:
            service.send_signal(signal.SIGKILL)
            await service.wait()
    first, *_ = receiver.received
    (delivered,) = receiver.accepted()
    assert delivered.webhook_id == first.webhook_id and delivered.body == first.body
    assert delivered.payload["data"]["job"]["id"] == job.json()["id"]
    async with db_engine.connect() as conn:
        message = (await conn.execute(select(OutboundMessage))).one()
    assert (message.status, message.attempts) == ("delivered", 2)  # the killed one, then this


async def test_webhooks_on_sqlite_the_laptop_default(tmp_path: Path) -> None:
    """The outbox triggers and the worker's statements on SQLite (`make run`): every move
    of a job arrives, a failed attempt is retried, a deletion is told."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hooks.db'}"
    await asyncio.to_thread(upgrade, url)
    receiver = Receiver(mode=Mode.ERROR)
    async with (
        receiving(receiver) as hook,
        stack_with_webhooks(url, dispatcher_enabled=True) as stack,
    ):
        endpoint = await add_endpoint(stack, hook)
        receiver.secrets = [endpoint["secret"]]
        job = await stack.create_job()
        await wait_until(lambda: asyncio.sleep(0, len(receiver.received) >= 2))
        receiver.mode = Mode.OK

        async def told(types: set[str]) -> bool:
            return {d.payload["type"] for d in receiver.unique().values()} == types

        await wait_until(lambda: told({"job.queued", "job.running", "job.succeeded"}))
        deleted = await stack.http.delete(f"/jobs/{job['id']}", headers=stack.headers())
        assert deleted.status_code == 204
        await wait_until(
            lambda: told({"job.queued", "job.running", "job.succeeded", "job.deleted"})
        )
        queued = next(
            d for d in await deliveries(stack, endpoint["id"]) if d["type"] == "job.queued"
        )
        results = [a["result"] for a in queued["history"]]
        assert results[0] == "http_error" and results[-1] == "delivered"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/admin/jobs?upstream_task_id=a%00b", None, "upstream_task_id"),
        ("GET", "/admin/jobs?user=a%00b", None, "user"),
        ("DELETE", "/admin/users/a%00b/data", None, "subject"),
        (
            "POST",
            "/admin/webhook-endpoints",
            {"url": "https://hooks.example.com/x", "description": "a\x00b"},
            "description",
        ),
        ("POST", "/admin/webhook-endpoints", {"url": "http://127.0.0.1/\x00"}, "url"),
        ("POST", "/admin/api-keys", {"subject": "svc\x00cms"}, "subject"),
    ],
)
async def test_control_characters_in_admin_input_are_a_422(
    admin_api: Stack, method: str, path: str, body: dict[str, Any] | None, field: str
) -> None:
    """Postgres refuses NUL in text: found by schemathesis as a 500 on /admin/jobs."""
    response = await admin_api.http.request(method, path, json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_an_answer_the_database_refuses_is_dropped_not_sent_again(
    database_url: str,
) -> None:
    """Whatever a receiver's answer holds that the database refuses (here a NUL given to
    the recorder as is): the attempt is recorded without the answer, so the message is
    not left pending to be sent again."""
    async with stack_with_webhooks(database_url, outbound_enabled=False) as stack:
        endpoint = await add_endpoint(stack, "https://hooks.example.com/in")
        await stack.http.post(f"/admin/webhook-endpoints/{endpoint['id']}/test", headers=ADMIN)
        state = stack.app.state.services
        worker = OutboundWorker(
            state.sessionmaker, state.media_links, state.outbound_secrets, stack.settings
        )
        try:
            (order,) = await worker._claim()
            answer = Outcome(AttemptResult.DELIVERED, 200, response_body="echo \x00 bytes")
            await worker._record_somehow(order, answer)
        finally:
            await worker.close()
        (delivery,) = await deliveries(stack, endpoint["id"])
    assert delivery["status"] == "delivered"
    assert [a["response_body"] for a in delivery["history"]] == [None]
