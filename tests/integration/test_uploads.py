"""Uploads: the user's own images, reference video and audio, judged by their bytes,
stored clean, used by jobs, fetched by Seedance (the simulator), and removed on time."""

import asyncio
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import JobUpload, Upload
from app.jobs.dispatcher import Dispatcher
from app.storage.objects import STAGING
from testkit.harness import Stack, bearer, running_stack, wait_until
from testkit.s3_server import S3Bucket
from tests import upload_files


@pytest.fixture  # one per test: a stack's media worker would copy another's videos
async def stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(database_url, dispatcher_enabled=True) as running:
        yield running


async def upload(
    stack: Stack,
    data: bytes,
    filename: str,
    content_type: str,
    subject: str = "alice",
    expect: int = 201,
) -> dict[str, Any]:
    files = {"file": (filename, data, content_type)}
    response = await stack.http.post("/uploads", files=files, headers=stack.headers(subject))
    assert response.status_code == expect, response.text
    return response.json()


async def stored_bytes(stack: Stack, body: dict[str, Any]) -> bytes:
    """The stored object, fetched by its signed URL as a browser would."""
    response = await stack.http.get(body["url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == body["content_type"]
    assert response.headers["x-content-type-options"] == "nosniff"
    return response.content


async def finished(stack: Stack, job_id: str, subject: str = "alice") -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def done() -> bool:
        seen.update(
            (await stack.http.get(f"/jobs/{job_id}", headers=stack.headers(subject))).json()
        )
        return seen["status"] in ("succeeded", "failed", "canceled")

    await wait_until(done, within=30)
    return seen


async def test_iphone_heic_becomes_an_upright_jpeg_without_metadata(stack: Stack) -> None:
    heic = upload_files.phone_heic(600, 800, gps=True)
    body = await upload(stack, heic, "IMG_0001.HEIC", "image/heic")
    assert (body["kind"], body["content_type"]) == ("image", "image/jpeg")
    assert (body["width"], body["height"]) == (600, 800)
    assert body["reference"] == f"upload:{body['id']}"
    data = await stored_bytes(stack, body)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (body["size_bytes"], body["sha256"])
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("JPEG", (600, 800))
    # upright: the red corner is top-left, as the owner saw it
    assert image.getpixel((10, 10))[0] > 200 and image.getpixel((10, 10))[1] < 50
    assert image.getpixel((590, 790)) == pytest.approx((128, 128, 128), abs=3)
    assert not image.getexif() and "exif" not in image.info and "icc_profile" not in image.info
    assert b"Exif" not in data and b"Apple" not in data


async def test_jpeg_with_exif_orientation_and_gps_is_stored_upright_and_clean(
    stack: Stack,
) -> None:
    original = upload_files.phone_jpeg(600, 800, gps=True)
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # GPS is there
    body = await upload(stack, original, "photo.jpg", "image/jpeg")
    data = await stored_bytes(stack, body)
    image = Image.open(io.BytesIO(data))
    assert image.size == (600, 800) and image.getpixel((10, 10))[0] > 200
    assert not image.getexif() and b"taken at home" not in data and b"Exif" not in data


async def test_png_bomb_is_refused_fast_before_decoding(stack: Stack) -> None:
    bomb = upload_files.png_bomb(100_000)  # 30 GB of pixels in about 20 KB
    assert len(bomb) < 100_000
    body = await upload(stack, bomb, "bomb.png", "image/png", expect=422)
    assert body["code"] == "upload_invalid"
    assert "100000x100000" in body["detail"] or "too large" in body["detail"]
    async with stack.app.state.services.sessionmaker() as session:
        assert await session.scalar(select(Upload.id)) is None  # nothing stored
    metrics = await stack.http.get("/metrics", headers=bearer(stack.settings, "ops", admin=True))
    assert 'seedance_uploads_total{kind="unknown",outcome="refused"}' in metrics.text


async def test_polyglot_is_sanitized_and_never_served_as_is(stack: Stack) -> None:
    polyglot = upload_files.polyglot()
    body = await upload(stack, polyglot, "cat.jpg", "image/jpeg")
    data = await stored_bytes(stack, body)
    assert data != polyglot and b"<script" not in data and b"PK\x03\x04" not in data
    assert Image.open(io.BytesIO(data)).format == "JPEG"


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "reason"),
    [
        (upload_files.mp4(), "holiday.jpg", "image/jpeg", "not image"),  # an MP4 renamed
        (upload_files.mp4(), "holiday.jpg", "application/octet-stream", "not image"),
        (b"<html><body>hello</body></html>" * 10, "page.png", "image/png", "not an image"),
        (upload_files.png(6400, 400), "wide.png", "image/png", "6400x400"),
        (upload_files.png(200, 300), "tiny.png", "image/png", "200x300"),
        (upload_files.png(1000, 300), "banner.png", "image/png", "width / height"),
        (upload_files.mp4(seconds=20), "long.mp4", "video/mp4", "20.0 s"),
        (upload_files.audio("mp3", seconds=1), "short.mp3", "audio/mpeg", "1.0 s"),
    ],
)
async def test_a_file_that_is_not_what_it_claims_or_outside_the_limits_is_refused(
    stack: Stack, data: bytes, filename: str, content_type: str, reason: str
) -> None:
    body = await upload(stack, data, filename, content_type, expect=422)
    assert body["code"] == "upload_invalid"
    assert reason in body["detail"], body["detail"]
    async with stack.app.state.services.sessionmaker() as session:
        assert await session.scalar(select(Upload.id)) is None


@pytest.mark.parametrize(
    ("data", "stored_as", "mode"),
    [
        (upload_files.webp(), "image/jpeg", "RGB"),
        (upload_files.png(640, 480, alpha=True), "image/png", "RGBA"),
    ],
)
async def test_webp_and_transparent_png_are_taken(
    stack: Stack, data: bytes, stored_as: str, mode: str
) -> None:
    body = await upload(stack, data, "picture", "application/octet-stream")
    assert (body["kind"], body["content_type"]) == ("image", stored_as)
    assert Image.open(io.BytesIO(await stored_bytes(stack, body))).mode == mode


async def test_reference_video_and_audio_are_remuxed_without_their_metadata(
    stack: Stack,
) -> None:
    video = await upload(stack, upload_files.mp4_with_location(3), "clip.mov", "video/quicktime")
    assert (video["kind"], video["content_type"], video["width"]) == ("video", "video/mp4", 320)
    assert video["duration_seconds"] == pytest.approx(3, abs=0.1)
    with av.open(io.BytesIO(await stored_bytes(stack, video))) as container:
        assert "location" not in container.metadata
        assert [s.type for s in container.streams] == ["video", "audio"]
    for fmt, content_type in (("mp3", "audio/mpeg"), ("ipod", "audio/mp4"), ("wav", "audio/wav")):
        body = await upload(stack, upload_files.audio(fmt), f"memo.{fmt}", "audio/x-whatever")
        assert (body["kind"], body["content_type"]) == ("audio", content_type)
        with av.open(io.BytesIO(await stored_bytes(stack, body))) as container:
            assert "title" not in container.metadata


async def test_the_encoders_sei_text_does_not_survive_the_remux(stack: Stack) -> None:
    """x264 writes its version and settings into the bitstream as an SEI message; cameras
    put serial numbers or places there (issue 37)."""
    original = upload_files.mp4_with_location(3)
    assert b"x264 - core" in original
    video = await upload(stack, original, "clip.mp4", "video/mp4")
    stored = await stored_bytes(stack, video)
    assert b"x264" not in stored
    with av.open(io.BytesIO(stored)) as container:  # still a video that plays
        assert len(list(container.decode(video=0))) == 6


@pytest.mark.parametrize(
    ("make", "name", "content_type"),
    [
        (upload_files.mp3_with_short_header, "memo.mp3", "audio/mpeg"),
        (upload_files.mp4_with_short_header, "clip.mp4", "video/mp4"),
    ],
)
async def test_a_reference_is_as_long_as_its_packets_whatever_its_header_says(
    stack: Stack, make: Callable[[], bytes], name: str, content_type: str
) -> None:
    """An MP3 whose Xing header says 9.8 s over a minute of frames, an MP4 whose headers
    say 10 s over a minute: judged by the time their packets span, and refused."""
    data = make()
    with av.open(io.BytesIO(data)) as container:
        assert container.duration / av.time_base < 11  # what the header says
    body = await upload(stack, data, name, content_type, expect=422)
    assert body["code"] == "upload_invalid"
    assert "lasts longer than 15 s" in body["detail"]
    listed = await stack.http.get("/uploads", headers=stack.headers())
    assert listed.json()["items"] == []


async def test_three_uploaded_images_reach_seedance_as_stored(stack: Stack) -> None:
    images = [
        await upload(stack, upload_files.phone_jpeg(), "a.jpg", "image/jpeg"),
        await upload(stack, upload_files.phone_heic(), "b.heic", "image/heic"),
        await upload(stack, upload_files.png(800, 600, alpha=True), "c.png", "image/png"),
    ]
    job = await stack.create_job(images=[i["reference"] for i in images], aspect_ratio="3:4")
    assert job["images"] == [i["reference"] for i in images]
    done = await finished(stack, job["id"])
    assert done["status"] == "succeeded", done
    (task,) = [t for t in stack.sim.tasks.values() if job["id"] in t.request["callback_url"]]
    assert [(s.field, s.kind, s.sha256) for s in task.inputs] == [
        ("images", "image", i["sha256"]) for i in images
    ]
    sent = task.request["images"]
    assert all(url.startswith(f"{stack.url}/media/uploads/") for url in sent)
    # signed for as long as a task can run, and no longer
    expires = [int(httpx.URL(url).params["expires"]) for url in sent]
    deadline = datetime.now(UTC).timestamp() + stack.settings.job_hard_deadline_seconds
    assert all(deadline - 120 < e <= deadline + 1 for e in expires)


async def test_uploads_in_a_batch_and_a_promote(stack: Stack) -> None:
    image = await upload(stack, upload_files.phone_jpeg(), "a.jpg", "image/jpeg")
    video = await upload(stack, upload_files.mp4(), "a.mp4", "video/mp4")
    audio = await upload(stack, upload_files.audio("mp3"), "a.mp3", "audio/mpeg")
    body = {
        "base": {
            "images": [image["reference"]],
            "reference_video_urls": [video["reference"]],
            "reference_audio_urls": [audio["reference"]],
            "aspect_ratio": "3:4",
        },
        "prompts": ["a boat at dawn", "a boat at dusk"],
    }
    keyed = {**stack.headers(), "Idempotency-Key": "batch-with-uploads"}
    batch = await stack.http.post("/jobs/batch", json=body, headers=keyed)
    assert batch.status_code == 202, batch.text
    replay = await stack.http.post("/jobs/batch", json=body, headers=keyed)
    assert (replay.status_code, replay.json()["id"]) == (200, batch.json()["id"])
    jobs = [await finished(stack, job["id"]) for job in batch.json()["jobs"]]
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"]
    for task in stack.sim.tasks.values():  # Seedance fetched each input, of its kind
        assert [(seen.field, seen.kind) for seen in task.inputs] == [
            ("images", "image"),
            ("reference_video_urls", "video"),
            ("reference_audio_urls", "audio"),
        ]
    promote = await stack.http.post(f"/jobs/{jobs[0]['id']}/promote", headers=stack.headers())
    assert promote.status_code == 202, promote.text
    render = await finished(stack, promote.json()["id"])
    assert (render["status"], render["images"]) == ("succeeded", [image["reference"]])


async def test_another_users_or_a_deleted_upload_is_refused_naming_the_field(
    stack: Stack,
) -> None:
    mine = await upload(stack, upload_files.phone_jpeg(), "a.jpg", "image/jpeg")
    theirs = await upload(stack, upload_files.phone_jpeg(), "b.jpg", "image/jpeg", subject="bob")
    video = await upload(stack, upload_files.mp4(), "c.mp4", "video/mp4")
    gone = await upload(stack, upload_files.phone_jpeg(), "d.jpg", "image/jpeg")
    deleted = await stack.http.delete(f"/uploads/{gone['id']}", headers=stack.headers())
    assert deleted.status_code == 204
    body = {
        "prompt": "a boat",
        "aspect_ratio": "3:4",
        "images": [mine["reference"], theirs["reference"], video["reference"], gone["reference"]],
    }
    response = await stack.http.post("/jobs", json=body, headers=stack.headers())
    assert response.status_code == 422, response.text
    errors = [(e["field"], e["code"]) for e in response.json()["errors"]]
    assert errors == [
        ("images[1]", "upload_not_found"),
        ("images[2]", "upload_wrong_kind"),
        ("images[3]", "upload_not_found"),
    ]
    # nor can bob read, list or delete alice's upload
    for method in ("GET", "DELETE"):
        answer = await stack.http.request(
            method, f"/uploads/{mine['id']}", headers=stack.headers("bob")
        )
        assert (answer.status_code, answer.json()["code"]) == (404, "upload_not_found")
    listed = (await stack.http.get("/uploads", headers=stack.headers("bob"))).json()
    assert [u["id"] for u in listed["items"]] == [theirs["id"]]
    assert len(stack.sim.tasks) == 0 or all(
        mine["id"] not in str(t.request) for t in stack.sim.tasks.values()
    )


async def test_upload_in_use_cannot_be_deleted_and_job_delete_removes_it(
    stack: Stack, database_url: str
) -> None:
    async with running_stack(database_url) as paused:  # no dispatcher: jobs stay queued
        image = await upload(paused, upload_files.phone_jpeg(), "a.jpg", "image/jpeg")
        shared = await upload(paused, upload_files.phone_jpeg(), "b.jpg", "image/jpeg")
        job = await paused.create_job(images=[image["reference"], shared["reference"]])
        other = await paused.create_job(images=[shared["reference"]])
        refused = await paused.http.delete(f"/uploads/{image['id']}", headers=paused.headers())
        assert (refused.status_code, refused.json()["code"]) == (409, "upload_in_use")
        assert job["id"] in refused.json()["detail"]
        deleted = await paused.http.delete(f"/jobs/{job['id']}", headers=paused.headers())
        assert deleted.status_code == 204
        read = await paused.http.get(f"/uploads/{image['id']}", headers=paused.headers())
        assert read.status_code == 404  # its only job is gone: so is it
        assert (await paused.http.get(image["url"])).status_code == 404
        # the other job still uses the shared one
        still = await paused.http.get(f"/uploads/{shared['id']}", headers=paused.headers())
        assert still.status_code == 200
        assert other["images"] == [shared["reference"]]


async def test_expired_uploads_are_swept_unless_a_job_uses_them(
    stack: Stack, db_engine: AsyncEngine
) -> None:
    unused = await upload(stack, upload_files.phone_jpeg(), "a.jpg", "image/jpeg")
    used = await upload(stack, upload_files.phone_jpeg(), "b.jpg", "image/jpeg")
    job = await stack.create_job(images=[used["reference"]], aspect_ratio="3:4")
    assert (await finished(stack, job["id"]))["status"] == "succeeded"
    async with db_engine.begin() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute(update(Upload).values(expires_at=past))
    remover = stack.app.state.services.upload_remover
    assert await remover.expire() == 1
    assert await remover.remove() == 1
    async with db_engine.connect() as conn:
        left = list(await conn.scalars(select(Upload.id)))
    assert left == [uuid.UUID(used["id"])]
    assert (await stack.http.get(unused["url"])).status_code == 404
    assert (await stack.http.get(used["url"])).status_code == 200


async def test_an_upload_cut_short_by_a_crash_is_removed_by_the_sweep(
    stack: Stack, db_engine: AsyncEngine
) -> None:
    body = await upload(stack, upload_files.phone_jpeg(), "a.jpg", "image/jpeg")
    async with db_engine.begin() as conn:  # as if the process died while storing it
        due = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute(update(Upload).values(remove_at=due))
    assert await stack.app.state.services.upload_remover.remove() == 1
    assert (await stack.http.get(body["url"])).status_code == 404
    async with db_engine.connect() as conn:
        assert await conn.scalar(select(Upload.id)) is None


async def test_erasure_leaves_no_upload_object_or_row(stack: Stack, db_engine: AsyncEngine) -> None:
    subject = "tenant/erin"
    used = await upload(stack, upload_files.phone_jpeg(), "a.jpg", "image/jpeg", subject)
    spare = await upload(stack, upload_files.audio("wav"), "b.wav", "audio/wav", subject)
    job = await stack.create_job(subject, images=[used["reference"]], aspect_ratio="3:4")
    assert (await finished(stack, job["id"], subject))["status"] == "succeeded"
    admin = bearer(stack.settings, "ops", admin=True)
    response = await stack.http.delete(f"/admin/users/{subject}/data", headers=admin)
    assert response.status_code == 200, response.text
    assert (response.json()["uploads_removed"], response.json()["uploads_pending_removal"]) == (
        2,
        0,
    )
    for body in (used, spare):
        assert (await stack.http.get(body["url"])).status_code == 404
    async with db_engine.connect() as conn:
        assert await conn.scalar(select(Upload.id)) is None
        assert await conn.scalar(select(JobUpload.job_id)) is None
        assert await conn.scalar(text("SELECT count(*) FROM uploads")) == 0


async def test_caps_per_plan_and_per_day(database_url: str) -> None:
    plans = {"free": {"uploads_per_day": 2, "upload_max_bytes": {"audio": 20_000}}}
    async with running_stack(database_url, plans=plans, default_plan="free") as small:
        wav = upload_files.audio("wav")  # cut off as it streams, by what it claims
        assert len(wav) > 20_000
        body = await upload(small, wav, "memo.wav", "audio/wav", expect=413)
        assert body["code"] == "upload_too_large"
        # claimed as nothing: judged by what it is, then refused by that kind's cap
        body = await upload(small, wav, "memo", "application/octet-stream", expect=413)
        assert body["code"] == "upload_too_large" and "audio" in body["detail"]
        body = await upload(small, upload_files.phone_jpeg(), "b.jpg", "image/jpeg", expect=429)
        assert body["code"] == "rate_limited" and "day" in body["detail"]


async def test_malformed_forms_are_refused_precisely(stack: Stack) -> None:
    headers = stack.headers()
    response = await stack.http.post("/uploads", json={"file": "x"}, headers=headers)
    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")
    response = await stack.http.post(
        "/uploads", data={"note": "hi"}, files={"other": ("a.jpg", b"x")}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "unexpected_field"
    response = await stack.http.post(
        "/uploads",
        content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nab',
        headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert (response.status_code, response.json()["errors"][0]["code"]) == (422, "missing")
    response = await stack.http.post("/uploads", files={"file": (None, "text")}, headers=headers)
    assert (response.status_code, response.json()["errors"][0]["code"]) == (422, "not_a_file")
    for length in (71, 300):  # RFC 2046 allows 70; python-multipart raised past 256 (a 500)
        boundary = "b" * length
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\nx'
        response = await stack.http.post(
            "/uploads",
            content=part.encode(),
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        error = response.json()["errors"][0]
        assert (response.status_code, error["code"], error["field"]) == (
            422,
            "invalid_multipart",
            "file",
        )


async def test_simulator_fails_a_task_whose_input_is_unreachable_or_the_wrong_kind(
    stack: Stack,
) -> None:
    key = {"Authorization": f"Bearer {stack.settings.seedance_api_key.get_secret_value()}"}
    video_url = await upload(stack, upload_files.mp4(), "c.mp4", "video/mp4")
    cases = {
        "http://127.0.0.1:9/nothing.png": "images[0] could not be fetched",
        video_url["url"]: "images[0] is not an image file",
    }
    async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
        for url, reason in cases.items():
            body = {"model": "seedance-2-mini", "images": [url], "duration": 4}
            answer = await sim.post("/v2/generate", json=body, headers=key)
            task = stack.sim.tasks[answer.json()["data"]["task_id"]]

            async def final(task: Any = task) -> bool:
                return task.done

            await wait_until(final)
            status = await sim.get("/v2/status", params={"task_id": task.task_id}, headers=key)
            data = status.json()["data"]
            assert data["status"] == "FAILED" and reason in data["error_message"], data


async def test_on_s3_seedance_gets_a_presigned_url_of_the_clean_copy(
    database_url: str, s3_bucket: S3Bucket
) -> None:
    async with running_stack(
        database_url, **s3_bucket.settings(), dispatcher_enabled=True
    ) as on_s3:
        image = await upload(on_s3, upload_files.phone_heic(), "IMG_2.HEIC", "image/heic")
        assert image["url"].startswith(f"{s3_bucket.endpoint}/{s3_bucket.name}/uploads/")
        assert s3_bucket.keys() == {f"uploads/{image['id']}.jpg"}
        job = await on_s3.create_job(images=[image["reference"]], aspect_ratio="3:4")
        assert (await finished(on_s3, job["id"]))["status"] == "succeeded"
        (task,) = on_s3.sim.tasks.values()
        assert task.request["images"][0].startswith(f"{s3_bucket.endpoint}/{s3_bucket.name}/")
        assert "X-Amz-Expires=3600" in task.request["images"][0]
        assert [seen.sha256 for seen in task.inputs] == [image["sha256"]]
        deleted = await on_s3.http.delete(f"/jobs/{job['id']}", headers=on_s3.headers())
        assert deleted.status_code == 204
        assert s3_bucket.keys() == set()  # the video, its poster and the upload


async def test_a_job_whose_upload_is_gone_fails_unsent(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(database_url) as paused:  # its dispatcher is the test's
        image = await upload(paused, upload_files.phone_jpeg(), "a.jpg", "image/jpeg")
        job = await paused.create_job(images=[image["reference"]], aspect_ratio="3:4")
        async with db_engine.begin() as conn:  # cannot happen through the API; checked anyway
            await conn.execute(update(Upload).values(remove_at=datetime.now(UTC)))
        state = paused.app.state.services
        dispatcher = Dispatcher(
            state.sessionmaker,
            state.seedance,
            state.rate_limits,
            paused.settings,
            state.checks.inputs,
        )
        await dispatcher.run_once()
        await dispatcher.drain()
        read = (await paused.http.get(f"/jobs/{job['id']}", headers=paused.headers())).json()
        assert (read["status"], read["error_code"]) == ("failed", "input_unavailable")
        assert "nothing was sent or charged" in read["error_detail"]
        assert paused.sim.calls["generate"] == 0


async def test_a_file_that_takes_too_long_to_read_is_refused_and_its_child_killed(
    database_url: str,
) -> None:
    async with running_stack(database_url, upload_sanitize_seconds=0.001) as hurried:
        body = await upload(hurried, upload_files.phone_jpeg(), "a.jpg", "image/jpeg", expect=422)
        assert body["code"] == "upload_invalid"
        assert "took longer than 0.001 s" in body["detail"]
        async with hurried.app.state.services.sessionmaker() as session:
            assert await session.scalar(select(Upload.id)) is None
        staged = list(hurried.app.state.services.storage.staging_root.glob("upload-*"))
        assert staged == []  # neither the original nor a half-written copy is left


async def test_storage_down_answers_503_and_leaves_nothing_behind(
    database_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "uploads").write_text("not a folder")  # every store fails until this is fixed
    async with running_stack(database_url, media_root=str(root)) as stack:
        files = {"file": ("a.jpg", upload_files.phone_jpeg(), "image/jpeg")}
        failed = await stack.http.post("/uploads", files=files, headers=stack.headers())
        assert (failed.status_code, failed.json()["code"]) == (503, "storage_unavailable")
        assert failed.headers["retry-after"] == "5"
        listed = await stack.http.get("/uploads", headers=stack.headers())
        assert listed.json()["items"] == []  # the row waits for the sweep, unseen
        (root / "uploads").unlink()  # storage is back
        body = await upload(stack, upload_files.phone_jpeg(), "a.jpg", "image/jpeg")
        assert (await stack.http.get(body["url"])).status_code == 200
        assert list((root / STAGING).iterdir()) == []  # nothing staged is left


async def stalled_upload(stack: Stack, trickle: bool) -> bytes:
    """An upload from a raw socket: its headers and the start of its body, then nothing
    (or one byte at a time, `trickle`) until the service answers; what it answered."""
    reader, writer = await start_upload(stack)
    answer = asyncio.ensure_future(reader.read(65536))
    try:
        async with asyncio.timeout(30):  # a bound on the wait: the service never answered
            while trickle and not answer.done():
                writer.write(b"x")
                await writer.drain()
                await asyncio.wait([answer], timeout=0.05)
            return await answer
    finally:
        answer.cancel()
        writer.close()


async def start_upload(stack: Stack) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Alice's upload from a raw socket: its headers and the start of its body, no more."""
    url = httpx.URL(stack.url)
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    start = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + upload_files.phone_jpeg()[:1000]
    )
    headers = "".join(f"{name}: {value}\r\n" for name, value in stack.headers().items())
    writer.write(
        f"POST /uploads HTTP/1.1\r\nHost: {url.host}\r\n{headers}"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n".encode()
        + start
    )
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize(
    ("settings", "trickle", "said"),
    [
        ({"upload_idle_seconds": 0.3}, False, "sent nothing for 0.3 s"),
        ({"upload_max_seconds": 0.5}, True, "was still arriving after 0.5 s"),
    ],
)
async def test_a_stalled_or_endless_upload_is_cut_and_nothing_staged_is_left(
    database_url: str, settings: dict[str, float], trickle: bool, said: str
) -> None:
    """Issue 37: 40 uploads that stalled after 29 MB held 1,160 MB of staging for minutes,
    and one at 1 byte/s was never closed by the server."""
    async with running_stack(database_url, **settings) as stack:
        answer = await stalled_upload(stack, trickle)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'"code":"body_timeout"' in answer and said.encode() in answer
        staging = stack.app.state.services.storage.staging_root
        assert list(staging.glob("upload-*")) == []
        listed = await stack.http.get("/uploads", headers=stack.headers())
        assert listed.json()["items"] == []


async def test_uploads_in_progress_are_capped_per_user(database_url: str) -> None:
    """Two of alice's uploads held open: her third is a 429 before its body is read, bob's
    goes through, and hers does once one of the two has gone."""
    async with running_stack(database_url, uploads_in_progress_per_user=2) as stack:
        held = [await start_upload(stack) for _ in range(2)]
        uploads = stack.app.state.services.uploads

        async def both_in_progress() -> bool:
            return uploads.in_progress.of("alice") == 2

        await wait_until(both_in_progress)
        body = await upload(stack, upload_files.phone_jpeg(), "c.jpg", "image/jpeg", expect=429)
        assert body["code"] == "too_many_uploads_in_progress"
        await upload(stack, upload_files.phone_jpeg(), "b.jpg", "image/jpeg", subject="bob")
        _, writer = held.pop()
        writer.close()  # the client hangs up: its upload is no longer in progress

        async def one_in_progress() -> bool:
            return uploads.in_progress.of("alice") == 1

        await wait_until(one_in_progress)
        await upload(stack, upload_files.phone_jpeg(), "c.jpg", "image/jpeg")
        for _, writer in held:
            writer.close()


async def test_uploads_beyond_the_staging_quota_are_503_and_nothing_is_left(
    database_url: str,
) -> None:
    """Issue 37: uploads in progress fill the process's staging quota, never the disk."""
    async with running_stack(database_url, upload_staging_quota_bytes=1024 * 1024) as stack:
        url = httpx.URL(stack.url)
        assert url.port is not None
        _, writer = await asyncio.open_connection(url.host, url.port)
        headers = "".join(f"{name}: {value}\r\n" for name, value in stack.headers("bob").items())
        writer.write(
            f"POST /uploads HTTP/1.1\r\nHost: {url.host}\r\n{headers}"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000000\r\n\r\n"
            '--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + bytes(900_000)  # staged as it arrives, then nothing more
        )
        await writer.drain()
        quota = stack.app.state.services.uploads.staging

        async def held() -> bool:
            return quota.used >= 512 * 1024

        await wait_until(held)
        refused = await upload(stack, bytes(600_000), "b.jpg", "image/jpeg", expect=503)
        assert refused["code"] == "staging_full"
        staging = stack.app.state.services.storage.staging_root
        assert len(list(staging.glob("upload-*.original"))) == 1  # only the held one's
        writer.close()
        await writer.wait_closed()

        async def given_back() -> bool:
            return quota.used == 0 and not list(staging.glob("upload-*"))

        await wait_until(given_back)
        await upload(stack, upload_files.phone_jpeg(), "c.jpg", "image/jpeg")
