"""Live updates over SSE (across replicas through Postgres NOTIFY, and in-process on
SQLite), batches, promotion and cancellation."""

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sse_starlette import ServerSentEvent

from app.api.sse import LiveStreamResponse, LiveStreams
from app.db.migrate import upgrade
from app.db.models import Batch, Job, JobEvent
from app.jobs.live.feed import job_feed, latest_event_id, owner_feed
from app.jobs.live.inbox import CAPACITY, FeedItem, Inbox, QueueSpot
from app.main import create_app
from testkit.harness import CLOSED_PORT_DB, LIVE, Stack, running_stack, serve, wait_until
from tests import upload_files

SLOW = {"generate_latency_seconds": 0.3, "task_seconds": 0.6}


async def read_events(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    limit: int = 20,
    opened: asyncio.Event | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(id, data) of each `job` event until the server closes the stream; `opened` is set
    when the stream has begun (where it starts is fixed by then)."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with http.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        if opened is not None:
            opened.set()
        event_id, data, kind = "", "", ""
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and data:
                if kind == "job":
                    events.append((event_id, json.loads(data)))
                event_id, data, kind = "", "", ""
                if len(events) >= limit:
                    break
    return events


@asynccontextmanager
async def replica(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A second instance of the service, on the same Postgres, with no background loops."""
    settings = stack.settings.model_copy(
        update={
            "dispatcher_enabled": False,
            "reconciler_enabled": False,
            "media_worker_enabled": False,
        }
    )
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


async def test_stream_on_one_replica_sees_moves_made_on_another(database_url: str) -> None:
    async with running_stack(database_url, sim_config=SLOW, **LIVE) as a, replica(a) as b:
        job = await a.create_job()
        events = await read_events(
            b, f"/jobs/{job['id']}/events", {**a.headers(), "Last-Event-ID": "0"}
        )
        assert [e["to_status"] for _, e in events] == ["queued", "running", "succeeded"]
        assert [e["source"] for _, e in events] == ["api", "dispatcher", "media"]
        assert events[-1][1]["job"]["video_url"]
        ids = [int(event_id) for event_id, _ in events]
        assert ids == sorted(ids) and ids == [e["event_id"] for _, e in events]
        # reconnecting after the first event replays exactly what came after it
        again = await read_events(
            b, f"/jobs/{job['id']}/events", {**a.headers(), "Last-Event-ID": str(ids[0])}
        )
        assert [e["to_status"] for _, e in again] == ["running", "succeeded"]
        # without Last-Event-ID: the latest move at once, then the stream ends (terminal)
        now = await read_events(b, f"/jobs/{job['id']}/events", a.headers())
        assert [(int(i), e["to_status"]) for i, e in now] == [(ids[-1], "succeeded")]


async def test_a_stream_opened_early_follows_the_job_live(database_url: str) -> None:
    async with running_stack(database_url, sim_config=SLOW, **LIVE) as a, replica(a) as b:
        job = await a.create_job()
        events = await read_events(b, f"/jobs/{job['id']}/events", a.headers())
        statuses = [e["to_status"] for _, e in events]
        assert statuses[-1] == "succeeded"
        assert statuses == ["queued", "running", "succeeded"][-len(statuses) :]


async def test_a_stream_closed_as_it_opens_still_gets_the_moves_before_it(
    database_url: str,
) -> None:
    """A server stopping closes every open stream's inbox, possibly before the stream has
    read anything: the moves recorded before it began still come first (a client that
    opened it gets the job's state, then resumes elsewhere)."""
    async with running_stack(database_url) as stack:
        job = await stack.create_job()
        state = stack.app.state.services
        inbox = Inbox()
        inbox.close()  # the server began stopping as the stream opened
        feed = job_feed(
            state.sessionmaker,
            state.event_hub,
            uuid.UUID(job["id"]),
            inbox,
            after_event_id=None,
            heartbeat_seconds=30,
        )
        items = [item async for item in feed]
    assert [(i.event.to_status, str(i.job.id)) for i in items if isinstance(i, FeedItem)] == [
        ("queued", job["id"])
    ]


async def test_streams_are_owner_only(database_url: str) -> None:
    async with running_stack(database_url) as stack:
        job = await stack.create_job("alice")
        other = await stack.http.get(f"/jobs/{job['id']}/events", headers=stack.headers("bob"))
        assert (other.status_code, other.json()["code"]) == (404, "job_not_found")
        assert (await stack.http.get(f"/jobs/{job['id']}/events")).status_code == 401


async def test_my_events_streams_all_my_jobs_and_only_mine(database_url: str) -> None:
    async with running_stack(database_url, sim_config=SLOW, **LIVE) as a, replica(a) as b:
        opened = asyncio.Event()
        reader = asyncio.create_task(read_events(b, "/events", a.headers(), 6, opened))
        await asyncio.wait_for(opened.wait(), 30)  # it starts after the moves so far
        mine = [(await a.create_job())["id"] for _ in range(2)]
        await a.create_job("bob")
        events = await asyncio.wait_for(reader, 30)
        assert {e["job_id"] for _, e in events} == set(mine)
        assert Counter(e["to_status"] for _, e in events) == {
            "queued": 2,
            "running": 2,
            "succeeded": 2,
        }


async def test_in_process_fan_out_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    await asyncio.to_thread(upgrade, url)
    async with running_stack(url, sim_config=SLOW, **LIVE) as stack:
        job = await stack.create_job()
        events = await read_events(
            stack.http, f"/jobs/{job['id']}/events", {**stack.headers(), "Last-Event-ID": "0"}
        )
        assert [e["to_status"] for _, e in events] == ["queued", "running", "succeeded"]
        # the read path and the callback's move outside Postgres: the session's way
        read = await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())
        assert read.status_code == 200
        body = read.json()
        assert (body["status"], body["images"], body["error_code"]) == ("succeeded", [], None)
        assert body["video_url"] and body["created_at"].endswith(("Z", "+00:00"))


# --- batches ------------------------------------------------------------------------


async def count(db_engine: AsyncEngine, model: type) -> int:
    async with db_engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(model)) or 0


async def test_batch_of_prompt_variants(api: Stack) -> None:
    body = {
        "base": {"duration": 5, "resolution": "480p"},
        "prompts": ["boat at dawn", "boat at dusk"],
    }
    response = await api.http.post("/jobs/batch", json=body, headers=api.headers())
    assert response.status_code == 202
    batch = response.json()
    assert [j["prompt"] for j in batch["jobs"]] == ["boat at dawn", "boat at dusk"]
    assert {(j["duration"], j["resolution"], j["batch_id"]) for j in batch["jobs"]} == {
        (5, "480p", batch["id"])
    }
    fetched = await api.http.get(f"/batches/{batch['id']}", headers=api.headers())
    assert fetched.json() == batch
    assert (
        await api.http.get(f"/batches/{batch['id']}", headers=api.headers("bob"))
    ).status_code == 404
    full = {"jobs": [{"prompt": "a"}, {"prompt": "b", "model": "seedance-2.0", "duration": 10}]}
    response = await api.http.post("/jobs/batch", json=full, headers=api.headers())
    assert [(j["model"], j["duration"]) for j in response.json()["jobs"]] == [
        ("seedance-2-mini", 8),
        ("seedance-2.0", 10),
    ]


async def test_a_batch_is_all_or_nothing(api: Stack, db_engine: AsyncEngine) -> None:
    cases = [
        (
            {"jobs": [{"prompt": "a"}, {"prompt": "b", "duration": 99}]},
            "jobs[1].duration",
            "invalid_duration",
        ),
        ({"prompts": ["a", "", "c"]}, "prompts[1]", "prompt_empty"),
        ({"prompts": ["only one"]}, "prompts", "too_short"),
        ({"prompts": ["p"] * 9}, "prompts", "too_long"),
        (
            {"prompts": ["a", "b"], "jobs": [{"prompt": "a"}, {"prompt": "b"}]},
            "body",
            "invalid_batch",
        ),
        ({"base": {"prompt": "x"}, "prompts": ["a", "b"]}, "base.prompt", "unknown_field"),
    ]
    for body, field, code in cases:
        response = await api.http.post("/jobs/batch", json=body, headers=api.headers())
        assert response.status_code == 422, body
        assert (field, code) in {(e["field"], e["code"]) for e in response.json()["errors"]}, body
    assert await count(db_engine, Job) == await count(db_engine, Batch) == 0


async def test_batch_budget_counts_the_whole_batch(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(
        database_url, user_daily_credit_budget=40, blocked_prompt_patterns=["nope"]
    ) as stack:
        three = {"prompts": ["a", "b", "c"]}  # 3 x 16 credits > 40
        refused = await stack.http.post("/jobs/batch", json=three, headers=stack.headers())
        assert (refused.status_code, refused.json()["code"]) == (402, "budget_exceeded")
        blocked = await stack.http.post(
            "/jobs/batch", json={"prompts": ["a", "nope"]}, headers=stack.headers()
        )
        assert blocked.json()["errors"] == [
            {
                "field": "prompts[1]",
                "code": "content_policy",
                "message": "not allowed by the content policy (blocked_pattern)",
                "categories": ["blocked_pattern"],
            }
        ]
        assert await count(db_engine, Job) == 0
        headers = {**stack.headers(), "Idempotency-Key": "batch-1"}
        first = await stack.http.post("/jobs/batch", json={"prompts": ["a", "b"]}, headers=headers)
        again = await stack.http.post("/jobs/batch", json={"prompts": ["a", "b"]}, headers=headers)
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json() == first.json()
        other = await stack.http.post("/jobs/batch", json={"prompts": ["a", "c"]}, headers=headers)
        assert other.status_code == 409
        assert await count(db_engine, Job) == 2


# --- promote and cancel ---------------------------------------------------------------


async def test_promote_a_succeeded_mini_job(database_url: str) -> None:
    async with running_stack(database_url, **LIVE) as stack:
        files = {"file": ("cat.jpg", upload_files.phone_jpeg(), "image/jpeg")}
        uploaded = await stack.http.post("/uploads", files=files, headers=stack.headers())
        image = uploaded.json()["reference"]
        mini = await stack.create_job(prompt="a cat", images=[image], aspect_ratio="9:16")
        early = await stack.http.post(f"/jobs/{mini['id']}/promote", headers=stack.headers())
        assert (early.status_code, early.json()["code"]) in {(409, "not_promotable")}
        await wait_until(lambda: _status(stack, mini["id"], "succeeded"))
        bad = await stack.http.post(
            f"/jobs/{mini['id']}/promote", json={"duration": 8}, headers=stack.headers()
        )
        assert bad.json()["errors"][0]["code"] == "invalid_duration"
        other = await stack.http.post(f"/jobs/{mini['id']}/promote", headers=stack.headers("bob"))
        assert other.status_code == 404
        response = await stack.http.post(
            f"/jobs/{mini['id']}/promote",
            json={"duration": 10, "resolution": "480p"},
            headers=stack.headers(),
        )
        assert response.status_code == 202
        render = response.json()
        assert (render["model"], render["duration"], render["resolution"]) == (
            "seedance-2.0",
            10,
            "480p",
        )
        assert (render["prompt"], render["images"], render["aspect_ratio"]) == (
            "a cat",
            [image],
            "9:16",
        )
        assert render["source_job_id"] == mini["id"]
        assert (
            render["estimated_cost"] == 10 * stack.settings.cost_per_second["seedance-2.0"]["480p"]
        )
        await wait_until(lambda: _status(stack, render["id"], "succeeded"))
        again = await stack.http.post(f"/jobs/{render['id']}/promote", headers=stack.headers())
        assert again.status_code == 409  # a seedance-2.0 job is not promoted again


async def _status(stack: Stack, job_id: str, status: str) -> bool:
    return (await stack.http.get(f"/jobs/{job_id}", headers=stack.headers())).json()[
        "status"
    ] == status


async def test_cancel_a_queued_job(api: Stack) -> None:
    job = await api.create_job()
    first = await api.http.post(f"/jobs/{job['id']}/cancel", headers=api.headers())
    assert (first.status_code, first.json()["status"]) == (200, "canceled")
    again = await api.http.post(f"/jobs/{job['id']}/cancel", headers=api.headers())
    assert (again.status_code, again.json()["status"]) == (200, "canceled")
    assert (
        await api.http.post(f"/jobs/{job['id']}/cancel", headers=api.headers("bob"))
    ).status_code == 404
    missing = await api.http.post(f"/jobs/{uuid.uuid4()}/cancel", headers=api.headers())
    assert missing.json()["code"] == "job_not_found"


async def test_cancel_races_with_the_dispatcher(database_url: str) -> None:
    """Each job ends either canceled and never sent, or sent and not canceled."""
    async with running_stack(
        database_url,
        sim_config={"generate_latency_seconds": 0.2},
        dispatcher_max_in_flight=3,
        **LIVE,
    ) as stack:
        # created together, so that sending them all takes longer than canceling them
        created = await asyncio.gather(*(stack.create_job(prompt=f"v{i}") for i in range(30)))
        jobs = [job["id"] for job in created]
        responses = await asyncio.gather(
            *(stack.http.post(f"/jobs/{job_id}/cancel", headers=stack.headers()) for job_id in jobs)
        )
        assert {r.status_code for r in responses} <= {200, 409}
        assert {r.json()["code"] for r in responses if r.status_code == 409} <= {"not_cancelable"}
        await wait_until(lambda: _all_final(stack))
        sent = {
            url.split("/webhooks/seedance/")[1].split("?")[0]
            for url in stack.sim.requests_by_callback
        }
        by_id = {str(job.id): job for job in await stack.jobs()}
        canceled = {job_id for job_id, job in by_id.items() if job.status == "canceled"}
        assert canceled == {str(r.json()["id"]) for r in responses if r.status_code == 200}
        assert not canceled & sent
        assert sent | canceled == set(jobs)
        assert 0 < len(canceled) < 30  # the race really happened both ways


async def _all_final(stack: Stack) -> bool:
    return all(j.status in {"succeeded", "canceled"} for j in await stack.jobs())


async def test_a_last_event_id_no_event_can_have_is_refused_before_the_stream(
    api: Stack,
) -> None:
    """Event ids are bigints: a larger Last-Event-ID used to get a 200, then a stream that
    died with a traceback when the database refused the value after the first byte."""
    job = await api.create_job()
    for path in (f"/jobs/{job['id']}/events", "/events"):
        for value in (str(2**63), "-1", "null"):
            refused = await api.http.get(path, headers={**api.headers(), "Last-Event-ID": value})
            assert refused.status_code == 422, (path, value)
            assert refused.json()["errors"][0]["field"] == "Last-Event-ID"


async def test_a_stream_from_now_on_starts_with_its_position(api: Stack) -> None:
    """`ready` names where the stream starts: a client cut off before any move resumes from
    it and misses nothing."""
    job = await api.create_job()
    async with api.http.stream("GET", "/events", headers=api.headers(), timeout=10) as response:
        lines = []
        async for line in response.aiter_lines():
            if line == "":
                break
            lines.append(line)
    async with api.app.state.services.sessionmaker() as session:
        latest = await session.scalar(select(func.max(JobEvent.id)))
    assert latest is not None and job["id"]
    assert sorted(lines) == sorted(
        ["event: ready", f"id: {latest}", f'data: {{"after_event_id":{latest}}}']
    )


@asynccontextmanager
async def open_stream(stack: Stack, subject: str) -> AsyncIterator[None]:
    """A `GET /events` stream held open (its `ready` event read) until the block ends."""
    async with stack.http.stream("GET", "/events", headers=stack.headers(subject)) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()  # not left with `break`: that would close the stream
        while await anext(lines) != "":
            pass
        yield


async def test_live_streams_are_capped_per_user_and_per_replica(database_url: str) -> None:
    async with running_stack(
        database_url, sse_max_streams_per_user=2, sse_max_streams_per_replica=3
    ) as stack:
        slots = stack.app.state.services.stream_slots
        job = await stack.create_job("alice")
        async with open_stream(stack, "alice"), open_stream(stack, "alice"):
            for path in ("/events", f"/jobs/{job['id']}/events"):
                refused = await stack.http.get(path, headers=stack.headers("alice"))
                assert (refused.status_code, refused.json()["code"]) == (429, "too_many_streams")
                assert refused.headers["Retry-After"]
            async with open_stream(stack, "bob"):  # the replica's third
                full = await stack.http.get("/events", headers=stack.headers("carol"))
                assert (full.status_code, full.json()["code"]) == (
                    503,
                    "too_many_streams_on_replica",
                )
        # a stream that ends, however it ends, gives its slot back
        await wait_until(lambda: asyncio.sleep(0, slots.open == 0))
        async with open_stream(stack, "alice"), open_stream(stack, "alice"):
            assert slots.open == 2


async def anext_all(lines: AsyncIterator[str]) -> list[str]:
    return [line async for line in lines]


async def test_a_stream_resumes_exactly_after_the_listener_reconnects(database_url: str) -> None:
    """A move made while the LISTEN connection is down is never notified: when it is back,
    every stream re-reads once (nothing else would deliver it)."""
    async with running_stack(database_url) as stack:
        listener = stack.app.state.services.event_listener
        await asyncio.wait_for(listener.listening.wait(), 10)
        job = await stack.create_job()
        path = f"/jobs/{job['id']}/events"
        async with stack.http.stream("GET", path, headers=stack.headers()) as response:
            lines = response.aiter_lines()
            seen = [await anext(lines) for _ in range(4)]  # id, event, data, blank: `queued`
            async with stack.app.state.services.sessionmaker() as session:
                killed = await session.scalar(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                    )
                )
            assert killed
            await wait_until(lambda: asyncio.sleep(0, not listener.listening.is_set()))
            canceled = await stack.http.post(f"/jobs/{job['id']}/cancel", headers=stack.headers())
            assert canceled.status_code == 200  # committed while nobody listens
            rest = asyncio.wait_for(anext_all(lines), 30)  # it ends at `canceled` (terminal)
            seen += await rest
        async with stack.app.state.services.sessionmaker() as session:
            recorded = list(
                await session.scalars(
                    select(JobEvent.id).where(JobEvent.job_id == job["id"]).order_by(JobEvent.id)
                )
            )
        assert [line for line in seen if line.startswith("id:")] == [
            f"id: {event_id}" for event_id in recorded
        ]
        assert len(recorded) == 2  # queued, canceled: none lost, none repeated


def moves(items: list[FeedItem | QueueSpot | None]) -> list[FeedItem]:
    return [item for item in items if isinstance(item, FeedItem)]


async def test_a_slow_reader_is_re_read_and_loses_nothing(database_url: str) -> None:
    """A stream that does not take its moves is not buffered without end: past its inbox's
    capacity it turns stale, and it re-reads from the database exactly what it missed."""
    async with running_stack(database_url) as stack:
        state = stack.app.state.services
        await asyncio.wait_for(state.event_listener.listening.wait(), 10)
        start = await latest_event_id(state.sessionmaker)
        inbox = Inbox()
        feed = owner_feed(
            state.sessionmaker,
            state.event_hub,
            "alice",
            inbox,
            after_event_id=start,
            heartbeat_seconds=60,
        )
        first = asyncio.ensure_future(anext(feed))  # subscribed, then waiting for a move
        created = [await stack.create_job("alice")]
        received = [await first]  # the reader now stops reading
        created += [await stack.create_job("alice") for _ in range(CAPACITY + 10)]
        await wait_until(lambda: asyncio.sleep(0, inbox.stale))
        while len(moves(received)) < len(created):  # places in line may come between
            received.append(await anext(feed))
        await feed.aclose()
        async with state.sessionmaker() as session:
            recorded = list(
                await session.scalars(
                    select(JobEvent.id)
                    .join(Job, Job.id == JobEvent.job_id)
                    .where(Job.owner == "alice", JobEvent.id > start)
                    .order_by(JobEvent.id)
                )
            )
        assert [item.event.id for item in moves(received)] == recorded
        assert len(recorded) == len(created)  # one `queued` move each: none lost or repeated


async def test_shutdown_ends_open_streams_properly(database_url: str) -> None:
    """The stream is completed (not cut) when the server stops: the client sees its end and
    resumes elsewhere with Last-Event-ID."""
    lines: list[str] = []
    async with httpx.AsyncClient(timeout=30) as viewer:
        async with running_stack(database_url) as stack:
            job = await stack.create_job()
            url = f"{stack.url}/jobs/{job['id']}/events"

            async def follow() -> None:
                async with viewer.stream("GET", url, headers=stack.headers()) as response:
                    async for line in response.aiter_lines():
                        lines.append(line)

            following = asyncio.ensure_future(follow())
            await wait_until(lambda: asyncio.sleep(0, "event: job" in lines))
        await asyncio.wait_for(following, 10)  # ended without a protocol error
    assert lines.count("event: job") == 1


async def test_a_stream_resumed_past_the_last_move_ends_with_the_job(api: Stack) -> None:
    """Found by schemathesis: with a Last-Event-ID past every move of a live job, no later
    move is new to the client, and the stream went on after the job had ended."""
    job = await api.create_job()
    headers = {**api.headers(), "Last-Event-ID": str(2**62)}
    reading = asyncio.ensure_future(read_events(api.http, f"/jobs/{job['id']}/events", headers))
    slots = api.app.state.services.stream_slots
    await wait_until(lambda: asyncio.sleep(0, slots.open == 1))  # following the job
    canceled = await api.http.post(f"/jobs/{job['id']}/cancel", headers=api.headers())
    assert canceled.status_code == 200
    assert await asyncio.wait_for(reading, 10) == []  # ended, with no move to send


async def test_a_database_outage_under_a_stream_ends_it_cleanly_and_a_bug_does_not() -> None:
    """A feed whose database read fails because the database is unreachable (a real
    refused connection) ends its stream as a complete response, so the client resumes
    with Last-Event-ID; any other error still cuts the response, as a bug should."""
    unreachable = create_async_engine(CLOSED_PORT_DB)
    streams = LiveStreams()

    async def events(then_fail: bool) -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(data="{}", id="7", event="job")
        if then_fail:
            async with unreachable.connect() as connection:
                await connection.execute(text("SELECT 1"))
        raise ValueError("a bug in a feed")

    app = FastAPI()

    @app.get("/outage")
    async def outage() -> LiveStreamResponse:
        return streams.response(events(then_fail=True), Inbox(), {})

    @app.get("/bug")
    async def bug() -> LiveStreamResponse:
        return streams.response(events(then_fail=False), Inbox(), {})

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/outage")  # raises if the response was cut
        assert response.status_code == 200
        assert response.text == "id: 7\r\nevent: job\r\ndata: {}\r\n\r\n"
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/bug")
    await streams.stop()
    await unreachable.dispose()
