"""Erasure leaves nothing of the user: a canary prompt written through every path (jobs,
batches, promote, a failure whose message quotes it, webhooks to a receiver that echoes
them, idempotency keys, an API key's description, an upload used by a job), then erased:
no table holds the canary, the subject or the upload, the key is refused, and no log line
ever held the canary (issue 27, item 2)."""

import asyncio
import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Base, Job, OutboundEvent, OutboundMessage
from testkit.harness import Stack, running_stack, wait_until
from testkit.webhook_receiver import Mode, Receiver, receiving
from tests import upload_files

ADMIN_TOKEN = "erasure-admin-token-" + "e" * 24
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CANARY = "canary-7f3a-quill"
SUBJECT = "tenant/alice"  # a subject with a slash, as some providers' and keys' are


async def settled(db_engine: AsyncEngine, jobs: int) -> bool:
    """Every job ended, every move fanned out, every webhook delivered."""
    async with db_engine.connect() as conn:
        statuses = (await conn.execute(select(Job.status))).scalars().all()
        events = (await conn.execute(select(OutboundEvent.id))).all()
        pending = (
            await conn.execute(
                select(OutboundMessage.id).where(OutboundMessage.status == "pending")
            )
        ).all()
    ended = len(statuses) == jobs and all(s in {"succeeded", "failed"} for s in statuses)
    return ended and not events and not pending


async def dump(db_engine: AsyncEngine) -> str:
    """Every row of every table, as text."""
    rows = []
    async with db_engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            result = await conn.execute(text(f"SELECT * FROM {table.name}"))  # noqa: S608
            rows += [f"{table.name}: {tuple(row)}" for row in result]
    return "\n".join(rows)


async def create(stack: Stack, path: str, body: object, headers: dict[str, str]) -> dict:
    response = await stack.http.post(path, json=body, headers=headers)
    assert response.status_code == 202, response.text
    created: dict = response.json()
    return created


async def test_erasure_leaves_no_trace_of_the_user_or_their_words(
    database_url: str, db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    receiver = Receiver(mode=Mode.ECHO)
    async with (
        receiving(receiver) as hook,
        running_stack(
            database_url,
            sim_config={"failure_quotes_prompt": True},
            admin_token=ADMIN_TOKEN,
            outbound_enabled=True,
            dispatcher_enabled=True,
            reconciler_enabled=True,
        ) as stack,
    ):
        endpoint = await stack.http.post(
            "/admin/webhook-endpoints", json={"url": hook}, headers=ADMIN
        )
        receiver.secrets = [endpoint.json()["secret"]]
        created_key = await stack.http.post(
            "/admin/api-keys",
            json={"subject": SUBJECT, "description": f"the key of {SUBJECT}"},
            headers=ADMIN,
        )
        key = {"Authorization": f"Bearer {created_key.json()['key']}"}

        def keyed(n: int) -> dict[str, str]:
            return {**key, "Idempotency-Key": f"{CANARY}-{n}"}

        files = {"file": (f"{CANARY}.jpg", upload_files.phone_jpeg(), "image/jpeg")}
        photo = (await stack.http.post("/uploads", files=files, headers=key)).json()
        body = {"prompt": f"{CANARY} a heron", "images": [photo["reference"]]}
        job = await create(stack, "/jobs", {**body, "aspect_ratio": "3:4"}, keyed(1))
        prompts = {"prompts": [f"{CANARY} dawn", f"{CANARY} dusk"]}
        await create(stack, "/jobs/batch", prompts, keyed(2))

        async def succeeded() -> bool:
            read = await stack.http.get(f"/jobs/{job['id']}", headers=key)
            return read.json()["status"] == "succeeded"

        await wait_until(succeeded)
        await create(stack, f"/jobs/{job['id']}/promote", {"duration": 5}, keyed(3))
        await wait_until(lambda: settled(db_engine, 4), within=60)
        stack.sim.config.task_failure_rate = 1.0  # refused, and the refusal quotes the prompt
        await create(stack, "/jobs", {"prompt": f"{CANARY} refused"}, keyed(4))
        await wait_until(lambda: settled(db_engine, 5), within=60)
        assert CANARY in await dump(db_engine)  # it was everywhere before
        assert any(CANARY in d.body for d in receiver.accepted())

        erased = await stack.http.delete(
            f"/admin/users/{quote(SUBJECT, safe='')}/data", headers=ADMIN
        )
        assert erased.status_code == 200, erased.text
        assert (erased.json()["subject"], erased.json()["jobs_deleted"]) == (SUBJECT, 5)
        assert erased.json()["uploads_removed"] == 1
        assert (await stack.http.get(photo["url"])).status_code == 404
        refused = await stack.http.get("/jobs", headers=key)
        await wait_until(lambda: settled(db_engine, 5))  # the deletions fanned out too
        await asyncio.sleep(0)
    assert refused.status_code == 401  # the subject's API key is revoked
    everything = await dump(db_engine)
    assert CANARY not in everything
    assert SUBJECT not in everything
    assert photo["id"] not in everything  # no upload row, no job naming it
    assert CANARY not in caplog.text  # prompts are never logged


async def test_a_subject_with_a_slash_as_is_in_the_path(database_url: str) -> None:
    async with running_stack(database_url, admin_token=ADMIN_TOKEN) as stack:
        await stack.create_job(SUBJECT)
        erased = await stack.http.delete(f"/admin/users/{SUBJECT}/data", headers=ADMIN)
        assert erased.status_code == 200 and erased.json()["jobs_deleted"] == 1
        assert (await stack.http.get("/jobs", headers=stack.headers(SUBJECT))).json()["items"] == []


async def test_an_upload_streaming_through_an_erasure_leaves_no_row_and_no_object(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """Issue 37: the upload row was written after sanitizing, so an erasure during a
    streaming upload removed nothing and the upload then landed under the erased subject."""
    async with running_stack(database_url, admin_token=ADMIN_TOKEN) as stack:
        folder = stack.app.state.services.storage.local_root / "uploads"

        def stored() -> set[Path]:  # the media folder is shared with earlier tests
            return {p for p in folder.rglob("*") if p.is_file()}

        before = stored()
        photo = upload_files.phone_jpeg()
        host, port = stack.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n"
        )
        tail = b"\r\n--b--\r\n"
        headers = "".join(f"{name}: {value}\r\n" for name, value in stack.headers().items())
        writer.write(
            f"POST /uploads HTTP/1.1\r\nHost: {host}\r\n{headers}"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(head) + len(photo) + len(tail)}\r\n\r\n".encode()
            + head
            + photo[:1000]
        )
        await writer.drain()
        uploads = stack.app.state.services.uploads

        async def under_way() -> bool:
            return uploads.in_progress.of("alice") == 1

        await wait_until(under_way)
        erased = await stack.http.delete("/admin/users/alice/data", headers=ADMIN)
        assert erased.status_code == 200
        writer.write(photo[1000:] + tail)
        await writer.drain()
        answer = await reader.read(65536)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 410 "), answer[:300]
        assert b'"code":"subject_erased"' in answer
        async with db_engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM uploads"))).scalar_one() == 0
        assert stored() == before
        # a request that begins after the erasure answered is a fresh start
        files = {"file": ("b.jpg", photo, "image/jpeg")}
        again = await stack.http.post("/uploads", files=files, headers=stack.headers())
        assert again.status_code == 201, again.text
