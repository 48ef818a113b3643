"""Moderation's input stage and Seedance's refusals (issue 34): a provider in OpenAI's
shape over real HTTP (`testkit.moderation_fake`), the simulator refusing by trigger words."""

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.models import Job, ModerationEvent
from app.moderation import standing
from app.moderation.history import EventKind, record
from testkit.databases import racing
from testkit.harness import Stack, running_stack, wait_until
from testkit.moderation_fake import FakeModeration, fake_moderation
from testkit.webhook_receiver import Receiver, receiving
from tests.upload_files import phone_jpeg

VIOLENT = {"violence": 0.97}


@asynccontextmanager
async def moderated_stack(
    database_url: str, fake: FakeModeration, **overrides: Any
) -> AsyncIterator[Stack]:
    async with (
        fake_moderation(fake) as url,
        running_stack(
            database_url,
            moderation_provider="openai",
            moderation_openai_base_url=f"{url}/v1",
            moderation_openai_api_key="sk-test-moderation-key",
            dispatcher_enabled=True,
            **overrides,
        ) as stack,
    ):
        yield stack


async def count(db_engine: AsyncEngine, model: Any) -> int:
    async with db_engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(model))).scalar_one()


async def events(db_engine: AsyncEngine) -> list[ModerationEvent]:
    async with db_engine.connect() as conn:
        rows = await conn.execute(select(ModerationEvent).order_by(ModerationEvent.id))
        return [ModerationEvent(**row._mapping) for row in rows]


async def test_a_flagged_prompt_is_refused_naming_its_field_and_nothing_is_recorded_or_sent(
    database_url: str, db_engine: AsyncEngine
) -> None:
    fake = FakeModeration(text_scores={"gore": VIOLENT})
    async with moderated_stack(database_url, fake) as stack:
        response = await stack.http.post(
            "/jobs", json={"prompt": "a scene full of gore"}, headers=stack.headers()
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == "content_policy"
        assert body["errors"] == [
            {
                "field": "prompt",
                "code": "content_policy",
                "message": "not allowed by the content policy (violence)",
                "categories": ["violence"],
            }
        ]
        assert await count(db_engine, Job) == 0
        (event,) = await events(db_engine)
        assert (event.subject, event.verdict, event.source, event.job_id) == (
            "alice",
            "review",
            "openai",
            None,
        )
        assert "gore" not in str(event.note)  # the history never holds the prompt
        ok = await stack.create_job(prompt="a quiet harbour at dawn")
        await wait_until(lambda: _status(stack, ok["id"], "succeeded"))
        assert stack.sim.calls["generate"] == 1
        assert fake.requests[-1]["model"] == "omni-moderation-latest"


async def _status(stack: Stack, job_id: str, wanted: str) -> bool:
    response = await stack.http.get(f"/jobs/{job_id}", headers=stack.headers())
    return bool(response.json()["status"] == wanted)


async def test_thresholds_per_category_decide_review_and_block(
    database_url: str, db_engine: AsyncEngine
) -> None:
    fake = FakeModeration(
        text_scores={
            "brawl": {"violence": 0.7},
            "massacre": {"violence": 0.99},
            "kiss": {"sexual": 0.8},
        }
    )
    thresholds = {"violence": {"review": 0.9, "block": 0.95}}
    async with moderated_stack(database_url, fake, moderation_thresholds=thresholds) as stack:
        # 0.7 is under this operator's review score; `sexual` has no threshold set: not judged
        await stack.create_job(prompt="a brawl in a saloon")
        await stack.create_job(prompt="a kiss at the station")
        refused = await stack.http.post(
            "/jobs", json={"prompt": "a massacre"}, headers=stack.headers()
        )
        assert refused.json()["errors"][0]["categories"] == ["violence"]
        blocks = [e for e in await events(db_engine) if e.verdict == "block"]
        assert [(e.strike, e.categories) for e in blocks] == [(True, {"violence": 0.99})]


async def test_a_batch_with_one_flagged_variant_is_refused_whole_naming_it(
    database_url: str, db_engine: AsyncEngine
) -> None:
    fake = FakeModeration(text_scores={"gore": VIOLENT})
    async with moderated_stack(database_url, fake) as stack:
        body = {
            "jobs": [{"prompt": "a calm sea"}, {"prompt": "gore everywhere"}, {"prompt": "a cat"}]
        }
        response = await stack.http.post("/jobs/batch", json=body, headers=stack.headers())
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == ["jobs[1].prompt"]
        assert await count(db_engine, Job) == 0
        assert stack.sim.calls["generate"] == 0


async def test_a_flagged_uploaded_image_is_judged_by_its_bytes_and_refused(
    database_url: str, db_engine: AsyncEngine
) -> None:
    photo, other = phone_jpeg(), phone_jpeg(width=700)
    fake = FakeModeration()
    async with moderated_stack(database_url, fake) as stack:
        ids = []
        for data in (photo, other):
            files = {"file": ("p.jpg", data, "image/jpeg")}
            uploaded = await stack.http.post("/uploads", files=files, headers=stack.headers())
            assert uploaded.status_code == 201, uploaded.text
            stored = await stack.http.get(uploaded.json()["url"])
            ids.append((uploaded.json()["id"], hashlib.sha256(stored.content).hexdigest()))
        fake.image_scores[ids[1][1]] = {"sexual": 0.93}
        images = [f"upload:{ids[0][0]}", f"upload:{ids[1][0]}"]
        response = await stack.http.post(
            "/jobs", json={"prompt": "make them dance", "images": images}, headers=stack.headers()
        )
        assert response.status_code == 422, response.text
        assert [(e["field"], e["categories"]) for e in response.json()["errors"]] == [
            ("images[1]", ["sexual"])
        ]
        # one image a request, as the real endpoint takes (it answers 400 to two)
        image_requests = [r for r in fake.requests if not isinstance(r["input"][0], str)]
        assert len(image_requests) == 2
        assert await count(db_engine, Job) == 0


async def test_fail_closed_refuses_with_503_and_retry_after_when_the_provider_is_down(
    database_url: str, db_engine: AsyncEngine
) -> None:
    fake = FakeModeration(down=True)
    async with moderated_stack(database_url, fake) as stack:
        response = await stack.http.post(
            "/jobs", json={"prompt": "a boat"}, headers=stack.headers()
        )
        assert response.status_code == 503
        assert response.json()["code"] == "moderation_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
        assert await count(db_engine, Job) == 0
        fake.down = False
        await wait_until(lambda: _accepted(stack))


async def _accepted(stack: Stack) -> bool:
    """A create goes through once the breaker lets a probe by."""
    response = await stack.http.post("/jobs", json={"prompt": "a boat"}, headers=stack.headers())
    return response.status_code == 202


async def test_fail_open_accepts_unchecked_and_judges_before_sending(
    database_url: str, db_engine: AsyncEngine
) -> None:
    fake = FakeModeration(down=True, text_scores={"gore": VIOLENT})
    async with moderated_stack(
        database_url, fake, moderation_fail_mode="open", moderation_recheck_seconds=0.05
    ) as stack:
        fine = await stack.create_job(prompt="a lighthouse")
        bad = await stack.create_job(prompt="gore on the rocks")
        assert fine["moderation"]["state"] == bad["moderation"]["state"] == "unchecked"
        assert stack.sim.calls["generate"] == 0
        fake.down = False
        await wait_until(lambda: _status(stack, fine["id"], "succeeded"))
        await wait_until(lambda: _status(stack, bad["id"], "failed"))
        failed = (await stack.http.get(f"/jobs/{bad['id']}", headers=stack.headers())).json()
        assert failed["error_code"] == "content_policy"
        assert failed["moderation"] == {
            "state": "blocked",
            "stage": "input",
            "source": "openai",
            "categories": ["violence"],
            "appealable": True,
        }
        assert stack.sim.calls["generate"] == 1  # the refused one was never sent


async def test_observe_mode_records_what_it_would_refuse_and_blocks_nothing(
    database_url: str, db_engine: AsyncEngine
) -> None:
    fake = FakeModeration(text_scores={"gore": VIOLENT})
    async with moderated_stack(database_url, fake, moderation_mode="observe") as stack:
        job = await stack.create_job(prompt="gore, observed")
        await wait_until(lambda: _status(stack, job["id"], "succeeded"))
        (event,) = await events(db_engine)
        assert (str(event.job_id), event.verdict, event.strike) == (job["id"], "review", False)
        assert event.categories == {"violence": 0.97}


async def test_seedance_refusals_fail_content_policy_at_their_stage_and_strike(
    database_url: str, db_engine: AsyncEngine
) -> None:
    sim = {"input_refusal_words": ["taboo"], "output_refusal_words": ["forbidden-render"]}
    async with running_stack(database_url, sim, dispatcher_enabled=True) as stack:
        at_input = await stack.create_job(prompt="a taboo scene")
        at_output = await stack.create_job(prompt="a forbidden-render of a city")
        for job, stage in ((at_input, "input"), (at_output, "output")):
            await wait_until(lambda j=job: _status(stack, j["id"], "failed"))
            out = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
            assert out["error_code"] == "content_policy"
            assert "Sensitive" not in out["error_detail"]  # upstream's words are for admins
            assert out["moderation"] == {
                "state": "blocked",
                "stage": stage,
                "source": "upstream",
                "categories": [],
                "appealable": True,
            }
        strikes = [e for e in await events(db_engine) if e.strike]
        assert sorted(e.stage or "" for e in strikes) == ["input", "output"]
        assert all("SensitiveContentDetected" in (e.note or "") for e in strikes)
        assert stack.sim.calls["generate_accepted"] == 1  # the input refusal made no task


ADMIN_TOKEN = "moderation-admin-token-" + "m" * 24
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_reports_reach_the_queue_and_a_takedown_answers_410_everywhere(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(
        database_url, dispatcher_enabled=True, admin_token=ADMIN_TOKEN
    ) as stack:
        job = await stack.create_job()
        await wait_until(lambda: _status(stack, job["id"], "succeeded"))
        seen = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
        video = await stack.http.get(seen["video_url"])
        assert video.status_code == 200
        report = {"reason": "violence", "comment": "shown at school"}
        answers = [
            await stack.http.post(
                f"/jobs/{job['id']}/reports", json=report, headers=stack.headers(who)
            )
            for who in ("bob", "bob", "carol")
        ]
        nowhere = await stack.http.post(
            f"/jobs/{uuid.uuid4()}/reports", json=report, headers=stack.headers("bob")
        )
        # the same answer whether the job exists or not: no oracle of job ids
        assert {(a.status_code, a.text) for a in [*answers, nowhere]} == {
            (202, '{"status":"received"}')
        }
        (case,) = (await stack.http.get("/admin/moderation/queue", headers=ADMIN)).json()["items"]
        assert (case["job_id"], case["reports"], case["subject"]) == (job["id"], 2, "alice")
        scraped = (await stack.http.get("/metrics", headers=ADMIN)).text
        assert "seedance_moderation_queue_open 1.0" in scraped
        file = (await stack.http.get(f"/admin/moderation/jobs/{job['id']}", headers=ADMIN)).json()
        assert sorted(r["reporter"] for r in file["reports"]) == ["bob", "carol"]
        assert [e["kind"] for e in file["events"]] == ["reported", "reported"]

        decided = await stack.http.post(
            f"/admin/moderation/jobs/{job['id']}/decisions",
            json={"action": "takedown", "note": "graphic violence"},
            headers=ADMIN,
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["state"] == "taken_down"
        after = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
        assert (after["video_url"], after["poster_url"]) == (None, None)
        assert after["moderation"]["state"] == "taken_down" and after["moderation"]["appealable"]
        content = await stack.http.get(f"/jobs/{job['id']}/content", headers=stack.headers())
        assert (content.status_code, content.json()["code"]) == (410, "taken_down")
        for url in (seen["video_url"], seen["poster_url"]):  # signed before the takedown
            gone = await stack.http.get(url)
            assert (gone.status_code, gone.json()["code"]) == (410, "taken_down")
        # admins keep the evidence until TAKEDOWN_RETENTION_HOURS
        file = (await stack.http.get(f"/admin/moderation/jobs/{job['id']}", headers=ADMIN)).json()
        assert (await stack.http.get(file["video_url"])).status_code == 200
        assert (await stack.http.get("/admin/moderation/queue", headers=ADMIN)).json()[
            "items"
        ] == []
        closed = await stack.http.get("/admin/moderation/queue?state=closed", headers=ADMIN)
        assert [c["job_id"] for c in closed.json()["items"]] == [job["id"]]

        appeal = await stack.http.post(
            f"/jobs/{job['id']}/appeal",
            json={"statement": "it is a film scene"},
            headers=stack.headers(),
        )
        assert appeal.status_code == 202
        (case,) = (await stack.http.get("/admin/moderation/queue", headers=ADMIN)).json()["items"]
        assert (case["appealed"], case["reports"]) == (True, 0)
        # the same bytes cannot come back as an upload
        files = {"file": ("again.mp4", video.content, "video/mp4")}
        reupload = await stack.http.post("/uploads", files=files, headers=stack.headers())
        assert (reupload.status_code, reupload.json()["code"]) == (422, "content_policy")
        # someone else's job cannot be appealed, nor a clear one
        other = await stack.create_job(subject="bob")
        for who, job_id, code in (("bob", job["id"], 404), ("bob", other["id"], 409)):
            refused = await stack.http.post(
                f"/jobs/{job_id}/appeal", json={"statement": "x"}, headers=stack.headers(who)
            )
            assert refused.status_code == code


async def test_strikes_suspend_a_user_and_lifting_forgives_them(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(
        database_url,
        blocked_prompt_patterns=["forbidden"],
        moderation_strikes_to_suspend=2,
        admin_token=ADMIN_TOKEN,
    ) as stack:
        for _ in range(2):
            refused = await stack.http.post(
                "/jobs", json={"prompt": "a forbidden thing"}, headers=stack.headers()
            )
            assert refused.json()["code"] == "content_policy"
        for method, path, kwargs in (
            ("POST", "/jobs", {"json": {"prompt": "a calm lake"}}),
            ("POST", "/jobs/batch", {"json": {"prompts": ["a", "b"]}}),
            ("POST", "/uploads", {"files": {"file": ("p.jpg", phone_jpeg(), "image/jpeg")}}),
        ):
            suspended = await stack.http.request(method, path, headers=stack.headers(), **kwargs)
            assert (suspended.status_code, suspended.json()["code"]) == (403, "account_suspended")
        usage = (await stack.http.get("/me/usage", headers=stack.headers())).json()
        assert usage["standing"]["suspended"] and usage["standing"]["strikes"] == 2
        assert (
            await stack.http.post("/jobs", json={"prompt": "a"}, headers=stack.headers("bob"))
        ).status_code == 202
        lifted = await stack.http.delete("/admin/users/alice/suspension", headers=ADMIN)
        assert lifted.status_code == 204
        await stack.create_job(prompt="a calm lake")
        usage = (await stack.http.get("/me/usage", headers=stack.headers())).json()
        assert (usage["standing"]["suspended"], usage["standing"]["strikes"]) == (False, 0)
        again = await stack.http.delete("/admin/users/alice/suspension", headers=ADMIN)
        assert (again.status_code, again.json()["code"]) == (404, "not_suspended")
        put = await stack.http.put(
            "/admin/users/alice/suspension", json={"reason": "spam wave"}, headers=ADMIN
        )
        assert put.json()["suspended"] and put.json()["reason"] == "spam wave"
        refused = await stack.http.post("/jobs", json={"prompt": "a lake"}, headers=stack.headers())
        assert refused.status_code == 403


async def test_two_requests_counting_the_same_strikes_suspend_once(
    db_engine: AsyncEngine,
) -> None:
    """A user at the strike limit sends two creates at once: both count the strikes and
    suspend; the second must find the first's suspension, not fail inserting its own."""
    settings = Settings(_env_file=None, moderation_strikes_to_suspend=2)  # type: ignore[call-arg]
    async with AsyncSession(db_engine) as seeding, seeding.begin():
        for _ in range(2):
            record(seeding, "alice", EventKind.DECIDED, "rules", verdict="block", strike=True)
    suspended_now = await racing(
        db_engine, lambda session: standing.enforce_strikes(session, settings, "alice")
    )
    assert suspended_now == (True, True)
    async with AsyncSession(db_engine) as session:
        suspended = await session.scalar(
            select(func.count())
            .select_from(ModerationEvent)
            .where(ModerationEvent.kind == EventKind.SUSPENDED)
        )
        assert suspended == 1


async def test_erasure_keeps_decisions_under_a_pseudonym_and_no_words(
    database_url: str, db_engine: AsyncEngine
) -> None:
    sim = {"output_refusal_words": ["forbidden-render"]}
    async with running_stack(
        database_url, sim, dispatcher_enabled=True, admin_token=ADMIN_TOKEN
    ) as stack:
        job = await stack.create_job(prompt="a forbidden-render of a secret garden")
        await wait_until(lambda: _status(stack, job["id"], "failed"))
        appeal = await stack.http.post(
            f"/jobs/{job['id']}/appeal",
            json={"statement": "my secret garden is fine"},
            headers=stack.headers(),
        )
        assert appeal.status_code == 202
        erased = await stack.http.delete("/admin/users/alice/data", headers=ADMIN)
        assert erased.status_code == 200
        kept = await events(db_engine)
        assert [e.kind for e in kept] == ["decided", "appealed"]
        assert {e.subject for e in kept} == {kept[0].subject} != {"alice"}
        assert all(e.note is None and "alice" != e.actor for e in kept)
        assert "secret" not in repr([vars(e) for e in kept])


async def stream(
    stack: Stack, count: int, opened: asyncio.Event
) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of the owner's `/events` stream: its first `count` job and moderation
    events."""
    seen: list[tuple[str, dict[str, Any]]] = []
    async with stack.http.stream("GET", "/events", headers=stack.headers()) as response:
        opened.set()
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind in ("job", "moderation"):
                seen.append((kind, json.loads(line[5:])))
                if len(seen) == count:
                    return seen
    return seen


async def test_a_flagged_result_is_held_then_released_live_on_the_owners_stream(
    database_url: str, db_engine: AsyncEngine
) -> None:
    fake = FakeModeration(every_image={"violence": 0.8})
    async with moderated_stack(
        database_url, fake, moderation_output=True, admin_token=ADMIN_TOKEN
    ) as stack:
        opened = asyncio.Event()
        reader = asyncio.create_task(stream(stack, 4, opened))
        await asyncio.wait_for(opened.wait(), 30)
        job = await stack.create_job()
        await wait_until(lambda: _status(stack, job["id"], "succeeded"))
        held = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
        assert (held["video_url"], held["poster_url"]) == (None, None)
        assert held["moderation"] == {
            "state": "held",
            "stage": "output",
            "source": "openai",
            "categories": ["violence"],
            "appealable": True,
        }
        content = await stack.http.get(f"/jobs/{job['id']}/content", headers=stack.headers())
        assert (content.status_code, content.json()["code"]) == (403, "in_review")
        # four frames, first and last among them, each its own request, downscaled
        assert len(fake.images) == 4 and all(max(size) <= 512 for size in fake.images)
        (case,) = (await stack.http.get("/admin/moderation/queue", headers=ADMIN)).json()["items"]
        assert case["held"] and case["job_id"] == job["id"]
        file = (await stack.http.get(f"/admin/moderation/jobs/{job['id']}", headers=ADMIN)).json()
        assert (await stack.http.get(file["video_url"])).status_code == 200
        released = await stack.http.post(
            f"/admin/moderation/jobs/{job['id']}/decisions",
            json={"action": "release"},
            headers=ADMIN,
        )
        assert released.json()["state"] == "clear"
        events = await asyncio.wait_for(reader, 30)
        assert [(kind, e["to_status"]) for kind, e in events] == [
            ("job", "queued"),
            ("job", "running"),
            ("job", "succeeded"),
            ("moderation", "succeeded"),
        ]
        assert events[2][1]["job"]["moderation"]["state"] == "held"
        shown = events[3][1]["job"]
        assert shown["moderation"]["state"] == "clear"
        assert (await stack.http.get(shown["video_url"])).status_code == 200


async def test_held_released_and_taken_down_are_told_to_the_products_servers(
    database_url: str,
) -> None:
    fake = FakeModeration(every_image={"violence": 0.8})
    receiver = Receiver()
    async with (
        moderated_stack(
            database_url,
            fake,
            moderation_output=True,
            admin_token=ADMIN_TOKEN,
            outbound_enabled=True,
        ) as stack,
        receiving(receiver) as url,
    ):
        events = ["job.moderation_held", "job.moderation_released", "job.taken_down"]
        added = await stack.http.post(
            "/admin/webhook-endpoints", json={"url": url, "events": events}, headers=ADMIN
        )
        assert added.status_code == 201, added.text
        receiver.secrets = [added.json()["secret"]]
        job = await stack.create_job()
        await wait_until(lambda: _status(stack, job["id"], "succeeded"))
        for action in ("release", "takedown"):
            decided = await stack.http.post(
                f"/admin/moderation/jobs/{job['id']}/decisions",
                json={"action": action},
                headers=ADMIN,
            )
            assert decided.status_code == 200

        async def told() -> bool:
            return len(receiver.accepted()) == 3

        await wait_until(told)
        # messages are not sent in order (docs/webhooks.md): each once, whatever the order
        payloads = {d.payload["type"]: d.payload for d in receiver.accepted()}
        assert sorted(payloads) == sorted(events)
        assert all(p["data"]["job"]["id"] == job["id"] for p in payloads.values())
        # each payload is the job as it was when the message was written: after the
        # takedown, taken down
        taken_down = payloads["job.taken_down"]["data"]["job"]
        assert taken_down["moderation"]["state"] == "taken_down"


async def test_a_suspension_is_told_to_the_products_servers(database_url: str) -> None:
    receiver = Receiver()
    async with (
        running_stack(database_url, admin_token=ADMIN_TOKEN, outbound_enabled=True) as stack,
        receiving(receiver) as url,
    ):
        added = await stack.http.post(
            "/admin/webhook-endpoints",
            json={"url": url, "events": ["user.suspended"]},
            headers=ADMIN,
        )
        receiver.secrets = [added.json()["secret"]]
        put = await stack.http.put(
            "/admin/users/tenant%2Fmallory/suspension", json={"reason": "spam"}, headers=ADMIN
        )
        assert put.status_code == 200, put.text

        async def told() -> bool:
            return len(receiver.accepted()) == 1

        await wait_until(told)
        (delivery,) = receiver.accepted()
        assert delivery.payload["type"] == "user.suspended"
        assert delivery.payload["data"]["subject"] == "tenant/mallory"
        assert delivery.payload["data"]["reason"] == "spam"
