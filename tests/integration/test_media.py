"""Durable media: every video is copied into our storage before its job is `succeeded`, and
plays from there (signed URLs, Range) after Seedance's URL has expired; the copy survives
faults and never stores anything twice; deletion, erasure and retention leave nothing."""

import asyncio
import hashlib
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.models import Job
from app.media.copier import MediaWorker
from app.storage.objects import ObjectStore
from app.storage.signed_urls import local_media_url
from simulator import SimulatorConfig, create_simulator
from testkit.harness import (
    LIVE,
    SEEDANCE_TEST_KEY,
    Stack,
    bearer,
    commit_answer_lost,
    free_port,
    make_settings,
    running_stack,
    serve,
    service_env,
    start_service,
    wait_until,
)
from testkit.s3_server import S3Bucket

# one copy attempt after another, quickly, three at most
FAST_RETRIES = {"media_copy_max_attempts": 3}


async def job_body(stack: Stack, job_id: str, subject: str = "alice") -> dict[str, Any]:
    response = await stack.http.get(f"/jobs/{job_id}", headers=stack.headers(subject))
    assert response.status_code == 200, response.text
    return response.json()


async def finished(stack: Stack, job_id: str) -> dict[str, Any]:
    """The job once it is terminal."""
    body: dict[str, Any] = {}

    async def terminal() -> bool:
        body.update(await job_body(stack, job_id))
        return body["status"] in {"succeeded", "failed", "canceled"}

    await wait_until(terminal, within=30)
    return body


async def get(url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url, headers=headers)


def local_files(root: str) -> set[str]:
    """The stored objects of a local media folder (not its staging area)."""
    base = Path(root)
    return {
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.is_file() and p.relative_to(base).parts[0] != ".staging"
    }


# --- the storage interface: the same behaviour on both backends ------------------------


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> ObjectStore:
    """The local backend as a running service serves it, or a real S3-compatible bucket."""
    if request.param == "local":
        api: Stack = request.getfixturevalue("api")
        return api.app.state.services.storage
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return ObjectStore(make_settings("sqlite://", **bucket.settings()))


async def test_both_backends_store_sign_and_delete_alike(
    storage: ObjectStore, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    source = tmp_path / "video.mp4"
    source.write_bytes(data)
    key = f"videos/{uuid.uuid4()}.mp4"
    assert not await storage.exists(key)
    await storage.put_file(key, source, "video/mp4")
    await storage.put_file(key, source, "video/mp4")  # a repeated copy overwrites: one object
    assert await storage.exists(key)
    url = storage.signed_url(key)
    whole = await get(url)
    assert whole.status_code == 200 and whole.content == data
    part = await get(url, Range="bytes=1000-1999")
    assert part.status_code == 206
    assert part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert await storage.delete(key) is True
    assert await storage.delete(key) is False  # deleting twice is fine
    assert (await get(url)).status_code in {403, 404}


# --- the copy, end to end ------------------------------------------------------------


async def test_a_video_plays_from_our_storage_after_the_upstream_url_expired(
    database_url: str,
) -> None:
    async with running_stack(database_url, **LIVE) as stack:
        created = await stack.create_job(duration=6, resolution="720p", aspect_ratio="9:16")
        body = await finished(stack, created["id"])
        assert body["status"] == "succeeded"
        (task,) = stack.sim.tasks.values()
        assert stack.sim.downloads_by_task[task.task_id] == 1  # one copy
        stack.sim.config.result_url_ttl_seconds = 0  # Seedance's URL is dead now
        assert (await get(task.video_url)).status_code == 404
        media = body["media"]
        assert (media["width"], media["height"], media["video_codec"]) == (720, 1280, "h264")
        assert media["duration_seconds"] == pytest.approx(6, abs=0.6)
        assert (media["mismatch"], media["has_audio"], media["content_type"]) == (
            None,
            False,
            "video/mp4",
        )
        video = await get(body["video_url"])
        assert video.status_code == 200
        assert hashlib.sha256(video.content).hexdigest() == media["sha256"]
        assert len(video.content) == media["size_bytes"]
        assert video.headers["content-type"] == "video/mp4"
        assert video.headers["accept-ranges"] == "bytes"
        assert video.headers["etag"]
        assert video.headers["cache-control"].startswith("private, max-age=")
        ranged = await get(body["video_url"], Range="bytes=0-99")
        assert (ranged.status_code, ranged.content) == (206, video.content[:100])
        poster = await get(body["poster_url"])
        assert poster.headers["content-type"] == "image/jpeg"
        assert poster.content[:3] == b"\xff\xd8\xff"
        # fresh URLs on every read, each one playing the same bytes
        again = await job_body(stack, created["id"])
        assert (await get(again["video_url"])).content == video.content
        # /content: the owner is redirected to a fresh signed URL
        content = await stack.http.get(f"/jobs/{created['id']}/content", headers=stack.headers())
        assert content.status_code == 307
        assert (await get(content.headers["location"])).content == video.content
        poster_redirect = await stack.http.get(
            f"/jobs/{created['id']}/content?variant=poster", headers=stack.headers()
        )
        assert (await get(poster_redirect.headers["location"])).content == poster.content


async def test_the_s3_backend_serves_presigned_urls(database_url: str, s3_bucket: S3Bucket) -> None:
    async with running_stack(database_url, **s3_bucket.settings(), **LIVE) as stack:
        created = await stack.create_job()
        body = await finished(stack, created["id"])
        assert body["status"] == "succeeded"
        assert body["video_url"].startswith(f"{s3_bucket.endpoint}/{s3_bucket.name}/videos/")
        assert "X-Amz-Signature=" in body["video_url"] and "X-Amz-Expires=3600" in body["video_url"]
        video = await get(body["video_url"])
        assert hashlib.sha256(video.content).hexdigest() == body["media"]["sha256"]
        assert video.headers["content-type"] == "video/mp4"
        ranged = await get(body["video_url"], Range="bytes=10-19")
        assert (ranged.status_code, ranged.content) == (206, video.content[10:20])
        assert s3_bucket.keys() == {
            f"videos/{created['id']}.mp4",
            f"posters/{created['id']}.jpg",
        }
        deleted = await stack.http.delete(f"/jobs/{created['id']}", headers=stack.headers())
        assert deleted.status_code == 204
        assert s3_bucket.keys() == set()


async def test_a_job_is_running_until_its_video_is_stored(database_url: str) -> None:
    """Seedance's success alone does not make a job `succeeded`: the client sees it only
    once our copy plays, and the live stream says so in the same order."""
    async with running_stack(database_url, media_worker_enabled=False, **LIVE) as stack:
        created = await stack.create_job()

        async def upstream_done() -> bool:
            return any(j.media_status == "pending" for j in await stack.jobs())

        await wait_until(upstream_done)
        body = await job_body(stack, created["id"])
        assert (body["status"], body["video_url"], body["media"]) == ("running", None, None)
        worker = MediaWorker(
            stack.app.state.services.sessionmaker,
            stack.app.state.services.storage,
            stack.settings,
            stack.app.state.services.children,
        )
        try:
            await worker.run_once()
            await worker.drain()
        finally:
            await worker.close()
        body = await job_body(stack, created["id"])
        assert body["status"] == "succeeded" and body["video_url"]


# --- faults ----------------------------------------------------------------------------


async def test_storage_down_during_a_copy_is_retried_and_nothing_is_lost(
    database_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "videos").write_text("not a folder")  # every upload fails until this is fixed
    async with running_stack(database_url, media_root=str(root), **LIVE) as stack:
        created = await stack.create_job()

        async def failed_twice() -> bool:
            return any(j.media_attempts >= 2 for j in await stack.jobs())

        await wait_until(failed_twice)
        assert (await job_body(stack, created["id"]))["status"] == "running"
        (root / "videos").unlink()  # storage is back
        body = await finished(stack, created["id"])
        assert body["status"] == "succeeded"
        assert local_files(str(root)) == {
            f"videos/{created['id']}.mp4",
            f"posters/{created['id']}.jpg",
        }


@pytest.mark.parametrize("gone_status", [404, 410])
async def test_an_expired_result_url_fails_the_job_and_its_cost_stays_counted(
    database_url: str, gone_status: int
) -> None:
    sim = {"result_url_ttl_seconds": 0, "result_expired_status": gone_status}
    async with running_stack(database_url, sim_config=sim, **FAST_RETRIES, **LIVE) as stack:
        created = await stack.create_job(duration=5, resolution="720p")
        body = await finished(stack, created["id"])
        assert (body["status"], body["error_code"]) == ("failed", "media_unavailable")
        assert str(gone_status) in body["error_detail"]
        (task,) = stack.sim.tasks.values()
        assert stack.sim.downloads_by_task[task.task_id] == 3  # retried, then given up
        usage = (await stack.http.get("/me/usage", headers=stack.headers())).json()
        assert usage["spent_today"] == created["estimated_cost"]


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:1/secret",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/x",
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(database_url: str, target: str) -> None:
    async with running_stack(database_url, sim_config={"result_redirect": target}, **LIVE) as stack:
        created = await stack.create_job()
        body = await finished(stack, created["id"])
        assert (body["status"], body["error_code"]) == ("failed", "media_unsafe_url")
        assert body["video_url"] is None
        (task,) = stack.sim.tasks.values()
        assert stack.sim.downloads_by_task[task.task_id] == 1  # refused at once, not retried


async def test_a_redirect_within_allowed_hosts_is_followed(database_url: str) -> None:
    async with running_stack(database_url, sim_config={"result_redirect": "cdn"}, **LIVE) as stack:
        created = await stack.create_job()
        assert (await finished(stack, created["id"]))["status"] == "succeeded"


@pytest.mark.parametrize("hide_length", [False, True])
async def test_oversized_files_are_refused_while_streaming(
    database_url: str, hide_length: bool, tmp_path: Path
) -> None:
    sim = {"result_pad_bytes": 300_000, "result_hide_length": hide_length}
    root = str(tmp_path / "media")
    async with running_stack(
        database_url, sim_config=sim, media_max_bytes=200_000, media_root=root, **LIVE
    ) as stack:
        created = await stack.create_job()
        body = await finished(stack, created["id"])
        assert (body["status"], body["error_code"]) == ("failed", "media_too_large")
        assert local_files(root) == set()


async def test_the_content_decides_the_type_not_the_header(database_url: str) -> None:
    async with running_stack(database_url, sim_config={"result_not_video": True}, **LIVE) as stack:
        refused = await finished(stack, (await stack.create_job())["id"])
        assert (refused["status"], refused["error_code"]) == ("failed", "media_invalid")
        stack.sim.config.result_not_video = False
        stack.sim.config.result_content_type = "text/html"  # a real MP4 with a wrong header
        accepted = await finished(stack, (await stack.create_job())["id"])
        assert accepted["status"] == "succeeded"
        assert accepted["media"]["content_type"] == "video/mp4"


async def test_a_truncated_download_is_retried(database_url: str) -> None:
    async with running_stack(
        database_url, sim_config={"result_truncate_rate": 1.0}, **LIVE
    ) as stack:
        created = await stack.create_job()

        async def tried() -> bool:
            return sum(stack.sim.downloads_by_task.values()) >= 1

        await wait_until(tried)
        stack.sim.config.result_truncate_rate = 0.0
        body = await finished(stack, created["id"])
        assert body["status"] == "succeeded"
        (task,) = stack.sim.tasks.values()
        played = await get(body["video_url"])
        assert played.content == task.video()


async def test_a_different_resolution_is_recorded_and_counted(database_url: str) -> None:
    sim = {"result_wrong_resolution_rate": 1.0}
    async with running_stack(database_url, sim_config=sim, **LIVE) as stack:
        created = await stack.create_job(resolution="720p", aspect_ratio="16:9")
        body = await finished(stack, created["id"])
        assert body["status"] == "succeeded"  # still a video the user paid for
        assert body["media"]["mismatch"] == "resolution: asked 720p, got 852x480"
        admin = bearer(stack.settings, "ops", admin=True)
        stats = (await stack.http.get("/admin/stats", headers=admin)).json()
        assert stats["media_mismatches"] == 1


async def test_two_replicas_racing_copy_each_video_once(database_url: str, tmp_path: Path) -> None:
    root = str(tmp_path / "media")
    async with running_stack(
        database_url, media_worker_enabled=False, media_root=root, **LIVE
    ) as stack:
        ids = [(await stack.create_job(prompt=f"v{i}"))["id"] for i in range(12)]

        async def all_pending() -> bool:
            jobs = await stack.jobs()
            return len(jobs) == 12 and all(j.media_status == "pending" for j in jobs)

        await wait_until(all_pending)
        state = stack.app.state.services
        replicas = [
            MediaWorker(state.sessionmaker, state.storage, stack.settings, state.children)
            for _ in range(2)
        ]
        for worker in replicas:
            worker.start()
        try:
            for job_id in ids:
                assert (await finished(stack, job_id))["status"] == "succeeded"
        finally:
            for worker in replicas:
                await worker.stop()
                await worker.close()
        assert sorted(stack.sim.downloads_by_task.values()) == [1] * 12
        assert len(local_files(root)) == 24


async def test_a_copy_claim_whose_commit_answer_was_lost_is_copied_at_once(
    database_url: str,
) -> None:
    """The media worker's claim commits, then the connection dies before its answer (our
    database blinked): the copy is due again once the database answers, not after its
    lease (MEDIA_COPY_LEASE_SECONDS: 15 minutes by default, a user waiting for nothing)."""
    async with running_stack(database_url, media_worker_enabled=False, **LIVE) as stack:
        created = await stack.create_job()

        async def pending() -> bool:
            return [j.media_status for j in await stack.jobs()] == ["pending"]

        await wait_until(pending)
        state = stack.app.state.services
        worker = MediaWorker(state.sessionmaker, state.storage, stack.settings, state.children)
        with (
            commit_answer_lost(stack, lambda job: job.media_attempts > 0),
            pytest.raises(ConnectionResetError),
        ):
            await worker.run_once()
        (job,) = await stack.jobs()
        assert (job.media_status, job.media_attempts) == ("pending", 0)
        worker.start()
        try:
            assert (await finished(stack, created["id"]))["status"] == "succeeded"
        finally:
            await worker.stop()
            await worker.close()
        assert list(stack.sim.downloads_by_task.values()) == [1]


# --- signed URLs, access, deletion, erasure, retention -----------------------------------


async def test_tampered_and_expired_media_urls_are_refused(database_url: str) -> None:
    async with running_stack(database_url, **LIVE) as stack:
        created = await stack.create_job()
        body = await finished(stack, created["id"])
        url = httpx.URL(body["video_url"])
        signature, expires = url.params["signature"], url.params["expires"]
        tampered = [
            url.copy_set_param("signature", ("0" if signature[0] != "0" else "1") + signature[1:]),
            url.copy_set_param("expires", str(int(expires) + 3600)),
            url.copy_with(path=url.path.replace(created["id"], str(uuid.uuid4()))),
        ]
        for bad in tampered:
            response = await get(str(bad))
            assert response.status_code == 403, bad
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "invalid_signature"
        key = f"videos/{created['id']}.mp4"
        expired = local_media_url(stack.settings, key, -1)
        response = await get(expired)
        assert (response.status_code, response.json()["code"]) == (403, "url_expired")
        assert (await get(str(url.copy_remove_param("signature")))).status_code == 422
        # another user: the job does not exist for them
        other = await stack.http.get(f"/jobs/{created['id']}/content", headers=stack.headers("bob"))
        assert (other.status_code, other.json()["code"]) == (404, "job_not_found")


async def test_content_of_a_job_without_a_video_is_409(api: Stack) -> None:
    created = await api.create_job()
    response = await api.http.get(f"/jobs/{created['id']}/content", headers=api.headers())
    assert (response.status_code, response.json()["code"]) == (409, "media_not_ready")


async def test_deleting_a_job_removes_its_media_prompt_and_urls(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(database_url, **LIVE) as stack:
        created = await stack.create_job()
        body = await finished(stack, created["id"])
        usage_before = (await stack.http.get("/me/usage", headers=stack.headers())).json()
        other = await stack.http.delete(f"/jobs/{created['id']}", headers=stack.headers("bob"))
        assert other.status_code == 404
        assert (await get(body["video_url"])).status_code == 200  # bob changed nothing
        for _ in range(2):  # deleting is idempotent
            response = await stack.http.delete(f"/jobs/{created['id']}", headers=stack.headers())
            assert response.status_code == 204
        assert (await get(body["video_url"])).status_code == 404
        assert (await get(body["poster_url"])).status_code == 404
        gone = await stack.http.get(f"/jobs/{created['id']}", headers=stack.headers())
        assert gone.status_code == 404
        listed = await stack.http.get("/jobs", headers=stack.headers())
        assert listed.json()["items"] == []
        content = await stack.http.get(f"/jobs/{created['id']}/content", headers=stack.headers())
        assert content.status_code == 404
        usage_after = (await stack.http.get("/me/usage", headers=stack.headers())).json()
        assert usage_after["spent_today"] == usage_before["spent_today"]  # the cost stays
        assert local_files(stack.settings.media_root).isdisjoint(
            {f"videos/{created['id']}.mp4", f"posters/{created['id']}.jpg"}
        )
    async with db_engine.connect() as conn:
        row = (await conn.execute(select(Job).where(Job.id == uuid.UUID(created["id"])))).one()
    assert row.prompt is None and row.deleted_at is not None and row.estimated_cost > 0
    assert row.media_status == "purged" and row.upstream_video_url is None


async def test_deleting_a_running_job_stores_nothing_when_it_finishes(
    database_url: str, tmp_path: Path
) -> None:
    root = str(tmp_path / "media")
    async with running_stack(
        database_url, sim_config={"task_seconds": 1.0}, media_root=root, **LIVE
    ) as stack:
        created = await stack.create_job()

        async def running() -> bool:
            return [j.status for j in await stack.jobs()] == ["running"]

        await wait_until(running)
        response = await stack.http.delete(f"/jobs/{created['id']}", headers=stack.headers())
        assert response.status_code == 204

        async def ended() -> bool:
            return [j.status for j in await stack.jobs()] == ["canceled"]

        await wait_until(ended)
        (job,) = await stack.jobs()
        assert (job.media_status, job.prompt) == ("purged", None)
        assert local_files(root) == set()
        assert sum(stack.sim.downloads_by_task.values()) == 0  # never even downloaded
        usage = (await stack.http.get("/me/usage", headers=stack.headers())).json()
        assert usage["spent_today"] == created["estimated_cost"]  # Seedance was paid


async def test_deleting_a_queued_job_cancels_it(api: Stack) -> None:
    created = await api.create_job()
    assert (
        await api.http.delete(f"/jobs/{created['id']}", headers=api.headers())
    ).status_code == 204
    (job,) = await api.jobs()
    assert (job.status, job.prompt) == ("canceled", None)


async def test_erasure_leaves_no_prompt_or_object_of_the_user(
    database_url: str, db_engine: AsyncEngine, s3_bucket: S3Bucket
) -> None:
    async with running_stack(database_url, **s3_bucket.settings(), **LIVE) as stack:
        mine = []
        for i in range(3):  # with Idempotency-Keys: the rows keep a digest of each request
            created = await stack.http.post(
                "/jobs",
                json={"prompt": f"alice {i}"},
                headers={**stack.headers("alice"), "Idempotency-Key": f"alice-{i}"},
            )
            mine.append(created.json()["id"])
        theirs = (await stack.create_job("bob", prompt="bob's"))["id"]
        for job_id in mine:
            assert (await finished(stack, job_id))["status"] == "succeeded"
        await wait_until(lambda: _succeeded(stack, theirs, "bob"))
        assert all(j.request_fingerprint for j in await stack.jobs() if j.owner == "alice")
        admin = bearer(stack.settings, "ops", admin=True)
        response = await stack.http.delete("/admin/users/alice/data", headers=admin)
        assert response.status_code == 200
        assert response.json() == {
            "subject": "alice",
            "jobs_deleted": 3,
            "prompts_removed": 3,
            "media_objects_removed": 6,
            "media_pending_removal": 0,
            "uploads_removed": 0,
            "uploads_pending_removal": 0,
        }
        again = await stack.http.delete("/admin/users/alice/data", headers=admin)
        assert again.json()["jobs_deleted"] == 0
        assert s3_bucket.keys() == {f"videos/{theirs}.mp4", f"posters/{theirs}.jpg"}
    async with db_engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Job.owner, Job.prompt, Job.images, Job.request_fingerprint.is_not(None))
            )
        ).all()
    erased = sorted(row for row in rows if row[0] != "bob")
    assert [row[1:] for row in erased] == [(None, [], False)] * 3
    assert len({row[0] for row in erased}) == 1  # one pseudonym stands for alice
    assert erased[0][0].startswith("erased-")
    # (created without an Idempotency-Key: never had one)
    assert [row for row in rows if row[0] == "bob"] == [("bob", "bob's", [], False)]


async def _succeeded(stack: Stack, job_id: str, subject: str) -> bool:
    return (await job_body(stack, job_id, subject))["status"] == "succeeded"


async def test_retention_removes_old_media(database_url: str, tmp_path: Path) -> None:
    root = str(tmp_path / "media")
    retention = 0.5 / 86400  # half a second, in days
    async with running_stack(
        database_url, media_retention_days=retention, media_root=root, **LIVE
    ) as stack:
        created = await stack.create_job()
        body = await finished(stack, created["id"])
        assert body["status"] == "succeeded"

        async def swept() -> bool:
            return [j.media_status for j in await stack.jobs()] == ["purged"]

        await wait_until(swept)
        assert local_files(root) == set()
        after = await job_body(stack, created["id"])
        assert (after["status"], after["video_url"], after["media"]) == ("succeeded", None, None)


def test_settings_refuse_an_s3_backend_without_a_bucket() -> None:
    with pytest.raises(ValueError, match="MEDIA_S3_BUCKET"):
        Settings(_env_file=None, media_backend="s3")  # type: ignore[call-arg]


async def test_a_copy_cut_by_sigkill_is_resumed_and_stored_once(
    database_url: str, tmp_path: Path
) -> None:
    """The service runs as its own process and is SIGKILLed while a download is under way;
    after a restart the copy's lease runs out, it is claimed again, and one object is stored."""
    port = free_port()
    root = tmp_path / "media"
    simulator = create_simulator(
        SimulatorConfig(
            api_key=SEEDANCE_TEST_KEY,
            task_seconds=0.2,
            reject_local_urls=False,
            result_stall_seconds=60,  # the first download hangs after its first bytes
        )
    )
    async with serve(simulator) as sim_url:
        env = service_env(
            {
                "database_url": database_url,
                "seedance_api_key": SEEDANCE_TEST_KEY,
                "seedance_base_url": f"{sim_url}/v2",
                "public_base_url": f"http://127.0.0.1:{port}",
                "dispatcher_poll_seconds": 0.05,
                "media_poll_seconds": 0.1,
                "media_root": str(root),
                "media_trusted_origins": sim_url,
                "media_copy_lease_seconds": 3,
            }
        )
        sim = simulator.state.sim
        service = await start_service(port, env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                headers = bearer(make_settings(database_url), "alice")
                created = await http.post("/jobs", json={"prompt": "boat"}, headers=headers)
                job_id = created.json()["id"]
                await wait_until(lambda: asyncio.sleep(0, sum(sim.downloads_by_task.values())))
                service.send_signal(signal.SIGKILL)
                await service.wait()
                sim.config.result_stall_seconds = 0
                service = await start_service(port, env)

                async def succeeded() -> bool:
                    body = (await http.get(f"/jobs/{job_id}", headers=headers)).json()
                    return body["status"] == "succeeded"

                await wait_until(succeeded, within=30)
        finally:
            service.send_signal(signal.SIGKILL)
            await service.wait()
    assert sorted(sim.downloads_by_task.values()) == [2]  # cut once, resumed once
    assert local_files(str(root)) == {f"videos/{job_id}.mp4", f"posters/{job_id}.jpg"}


async def test_media_answers_conditional_and_bad_range_requests_as_a_cache_and_a_client_expect(
    database_url: str,
) -> None:
    """`If-None-Match` with the current ETag is a 304 (it was a full 200), every answer says
    `nosniff`, and a bad `Range` is a problem+json 400 or 416 (it was text/plain)."""
    async with running_stack(database_url, **LIVE) as stack:
        created = await stack.create_job()
        body = await finished(stack, created["id"])
        url = body["video_url"]
        full = await get(url)
        etag = full.headers["etag"]
        again = await get(url, **{"If-None-Match": etag})
        bad = await get(url, Range="bytes=9-3")
        past = await get(url, Range=f"bytes={len(full.content) + 10}-")
        part = await get(url, Range="bytes=0-99")
    assert full.headers["x-content-type-options"] == "nosniff"
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert again.headers["x-content-type-options"] == "nosniff"
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_range")
    assert bad.headers["content-type"] == "application/problem+json"
    assert (past.status_code, past.json()["code"]) == (416, "range_not_satisfiable")
    assert past.headers["content-range"] == f"bytes */{len(full.content)}"
    assert (part.status_code, len(part.content)) == (206, 100)
