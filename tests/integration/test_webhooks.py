"""Callbacks drive job state; the reconciler spends status calls only on lost callbacks;
forged, duplicate, late and out-of-order deliveries change nothing."""

import asyncio
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Job, JobEvent
from app.jobs.callbacks import callback_signature
from testkit.harness import LIVE, Stack, running_stack, wait_until


async def finished(stack: Stack, count: int) -> bool:
    jobs = await stack.jobs()
    return len(jobs) == count and all(j.status in {"succeeded", "failed"} for j in jobs)


async def create_many(stack: Stack, count: int) -> None:
    for i in range(count):
        await stack.create_job(prompt=f"variant {i}")


async def events_per_job(db_engine: AsyncEngine) -> Counter[uuid.UUID]:
    async with db_engine.connect() as conn:
        rows = await conn.execute(select(JobEvent.job_id, func.count()).group_by(JobEvent.job_id))
        return Counter(dict(rows.all()))


async def test_100_jobs_finish_by_callback_with_one_upstream_call_each(database_url: str) -> None:
    async with running_stack(database_url, **LIVE) as stack:
        await create_many(stack, 100)
        await wait_until(lambda: finished(stack, 100), within=60)
        jobs = await stack.jobs()
        assert {j.status for j in jobs} == {"succeeded"}
        assert {j.resolved_by for j in jobs} == {"webhook"}
        assert stack.sim.calls["generate"] == 100
        assert stack.sim.calls["status"] == 0


async def test_lost_callbacks_are_recovered_by_polling_only_those_jobs(database_url: str) -> None:
    async with running_stack(
        database_url,
        sim_config={"callback_loss_rate": 0.3},
        # overdue 10 s after submission; a delivered callback arrives within 0.2 s plus its
        # handling (at 1 s, a busy machine once handled one too late and it was polled)
        callback_overdue_base_seconds=10.0,
        callback_overdue_per_video_second=0.0,
        **LIVE,
    ) as stack:
        await create_many(stack, 100)
        await wait_until(lambda: finished(stack, 100), within=60)
        jobs = await stack.jobs()
        lost = stack.sim.lost_callbacks
        assert 15 <= len(lost) <= 45  # the seeded 30% really dropped callbacks
        assert {j.status for j in jobs} == {"succeeded"}
        assert {j.upstream_task_id for j in jobs if j.resolved_by == "reconciler"} == lost
        assert set(stack.sim.status_calls_by_task) == lost  # polls went to lost callbacks only
        assert stack.sim.calls["status"] == len(lost)  # and one each sufficed
        assert stack.sim.calls["generate"] == 100


async def test_duplicate_and_out_of_order_callbacks_change_nothing(
    database_url: str, db_engine: AsyncEngine
) -> None:
    faults = {"callback_duplicate_rate": 1.0, "callback_out_of_order_rate": 1.0}
    async with running_stack(database_url, sim_config=faults, **LIVE) as stack:
        await create_many(stack, 20)
        await wait_until(lambda: finished(stack, 20))
        await wait_until(lambda: _sent(stack, "stale_200", 20))
        assert stack.sim.callbacks["duplicate_200"] == 20
        jobs = await stack.jobs()
        assert {j.status for j in jobs} == {"succeeded"}
    # queued, running, succeeded: one event per real move, none for the repeats
    assert set((await events_per_job(db_engine)).values()) == {3}


async def _sent(stack: Stack, label: str, count: int) -> bool:
    return stack.sim.callbacks[label] == count


async def test_confirmation_costs_one_status_call_per_success(database_url: str) -> None:
    async with running_stack(database_url, confirm_success_with_status=True, **LIVE) as stack:
        await create_many(stack, 20)
        await wait_until(lambda: finished(stack, 20))
        assert {j.status for j in await stack.jobs()} == {"succeeded"}
        assert stack.sim.calls["generate"] == 20
        assert stack.sim.calls["status"] == 20


async def test_failed_tasks_fail_their_jobs(database_url: str) -> None:
    async with running_stack(database_url, sim_config={"task_failure_rate": 1.0}, **LIVE) as stack:
        job = await stack.create_job()
        await wait_until(lambda: finished(stack, 1))
        body = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
        assert (body["status"], body["error_code"]) == ("failed", "upstream_failed")
        assert body["error_detail"] == "simulated generation failure"


async def test_tasks_that_never_finish_time_out(database_url: str) -> None:
    async with running_stack(
        database_url,
        sim_config={"never_finish_rate": 1.0},
        callback_overdue_base_seconds=0.1,
        callback_overdue_per_video_second=0.0,
        reconciler_backoff_initial_seconds=0.3,
        job_hard_deadline_seconds=2.0,
        **LIVE,
    ) as stack:
        job = await stack.create_job()
        await wait_until(lambda: finished(stack, 1))
        body = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
        assert (body["status"], body["error_code"]) == ("failed", "upstream_timeout")
        polls = stack.sim.calls["status"]
        # backed off: 0.3s, 0.6s, 1.2s... within a 2s deadline, and one last look at it
        assert 2 <= polls <= 6


async def test_unknown_submissions_without_a_callback_fail_after_the_grace(
    database_url: str,
) -> None:
    async with running_stack(
        database_url,
        sim_config={
            "generate_hang_rate": 1.0,
            "generate_hang_seconds": 3,
            "callback_loss_rate": 1.0,
        },
        seedance_read_timeout=0.3,
        submit_unknown_grace_seconds=1.0,
        **LIVE,
    ) as stack:
        job = await stack.create_job()
        await wait_until(lambda: finished(stack, 1))
        body = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
        assert (body["status"], body["error_code"]) == ("failed", "upstream_timeout")
        assert stack.sim.calls["generate"] == 1  # never re-sent


# --- deliveries we make ourselves: forged, malformed, oversized ---------------------------


def success_body(task_id: str) -> dict[str, object]:
    return {
        "code": 200,
        "data": {
            "task_id": task_id,
            "status": "SUCCESS",
            "response": ["https://cdn.example.net/v.mp4"],
        },
    }


async def two_running_jobs(stack: Stack) -> tuple[Job, Job]:
    """Two jobs accepted upstream whose real callbacks are lost, so only ours arrive."""
    for _ in range(2):
        await stack.create_job()
    await wait_until(lambda: _all_running(stack, 2))
    first, second = await stack.jobs()
    return first, second


async def _all_running(stack: Stack, count: int) -> bool:
    return [j.status for j in await stack.jobs()] == ["running"] * count


async def post_callback(
    stack: Stack, job_id: uuid.UUID, sig: str | None, **kwargs
) -> httpx.Response:
    params = {} if sig is None else {"sig": sig}
    return await stack.http.post(f"/webhooks/seedance/{job_id}", params=params, **kwargs)


@pytest.fixture
async def quiet_stack(database_url: str):
    async with running_stack(
        database_url,
        sim_config={"callback_loss_rate": 1.0, "task_seconds": 60},
        dispatcher_enabled=True,
        media_worker_enabled=False,  # a success stays a pending copy: what the webhook did
    ) as stack:
        yield stack


async def test_forged_callbacks_are_rejected_and_change_nothing(
    quiet_stack: Stack, db_engine: AsyncEngine
) -> None:
    stack = quiet_stack
    a, b = await two_running_jobs(stack)
    sig_a, sig_b = (callback_signature(stack.settings, j.id) for j in (a, b))
    assert a.upstream_task_id and b.upstream_task_id
    before = await events_per_job(db_engine)
    attempts = [
        (a.id, None, success_body(a.upstream_task_id), 401, "invalid_signature"),
        (a.id, "0" * 64, success_body(a.upstream_task_id), 401, "invalid_signature"),
        (a.id, sig_b, success_body(a.upstream_task_id), 401, "invalid_signature"),  # b's proof
        (b.id, sig_b, success_body(a.upstream_task_id), 409, "task_mismatch"),  # a's body replayed
        (uuid.uuid4(), sig_a, success_body(a.upstream_task_id), 401, "invalid_signature"),
    ]
    for job_id, sig, body, status, code in attempts:
        response = await post_callback(stack, job_id, sig, json=body)
        assert (response.status_code, response.json()["code"]) == (status, code)
    assert [j.status for j in await stack.jobs()] == ["running", "running"]
    assert await events_per_job(db_engine) == before


async def test_unknown_jobs_malformed_and_oversized_bodies(quiet_stack: Stack) -> None:
    stack = quiet_stack
    a, _ = await two_running_jobs(stack)
    sig = callback_signature(stack.settings, a.id)
    ghost = uuid.uuid4()
    response = await post_callback(
        stack, ghost, callback_signature(stack.settings, ghost), json=success_body("sim-x")
    )
    assert (response.status_code, response.json()["code"]) == (404, "job_not_found")
    for content in [
        b"{not json",
        b"[]",
        b'{"task_id": "t"}',
        b'{"status": "SUCCESS"}',
        b"\xff\xfe",
    ]:
        response = await post_callback(stack, a.id, sig, content=content)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_callback"), content
    huge = b'{"task_id": "' + b"x" * stack.settings.max_request_body_bytes + b'"}'
    response = await post_callback(stack, a.id, sig, content=huge)
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")
    assert [j.status for j in await stack.jobs()] == ["running", "running"]


async def test_a_genuine_late_callback_after_success_is_acknowledged_and_ignored(
    quiet_stack: Stack, db_engine: AsyncEngine
) -> None:
    stack = quiet_stack
    a, _ = await two_running_jobs(stack)
    assert a.upstream_task_id
    sig = callback_signature(stack.settings, a.id)
    first = await post_callback(stack, a.id, sig, json=success_body(a.upstream_task_id))
    assert first.json() == {"result": "applied"}
    late = {"task_id": a.upstream_task_id, "status": "IN_PROGRESS"}
    for body in (success_body(a.upstream_task_id), late, {**late, "status": "FAILED"}):
        response = await post_callback(stack, a.id, sig, json=body)
        assert (response.status_code, response.json()) == (200, {"result": "ignored"})
    # queued, running: the success hands the job to the media worker, without a move
    assert (await events_per_job(db_engine))[a.id] == 2
    stored = next(j for j in await stack.jobs() if j.id == a.id)
    assert (stored.status, stored.media_status, stored.upstream_video_url) == (
        "running",
        "pending",
        "https://cdn.example.net/v.mp4",
    )
    assert stored.next_poll_at is None  # the reconciler no longer asks about it


async def test_concurrent_deliveries_move_a_job_once(
    quiet_stack: Stack, db_engine: AsyncEngine
) -> None:
    """Twenty deliveries at once, success and failure mixed: the first to take the row lock
    applies, every other one finds it decided; a failure is one terminal event, a success
    one pending copy (the job stays running until the media worker has stored it)."""
    stack = quiet_stack
    a, _ = await two_running_jobs(stack)
    assert a.upstream_task_id
    sig = callback_signature(stack.settings, a.id)
    failure = {"task_id": a.upstream_task_id, "status": "FAILED", "error_message": "no"}
    bodies = [success_body(a.upstream_task_id) if i % 2 else failure for i in range(20)]
    responses = await asyncio.gather(
        *(post_callback(stack, a.id, sig, json=body) for body in bodies)
    )
    results = Counter(response.json()["result"] for response in responses)
    assert results == {"applied": 1, "ignored": 19}
    async with db_engine.connect() as conn:
        terminal = (
            await conn.execute(
                select(JobEvent.from_status, JobEvent.to_status, JobEvent.source).where(
                    JobEvent.job_id == a.id, JobEvent.to_status.in_(["succeeded", "failed"])
                )
            )
        ).all()
    stored = next(j for j in await stack.jobs() if j.id == a.id)
    assert stored.resolved_by == "webhook"
    if stored.status == "running":  # the success came first
        assert terminal == []
        assert (stored.media_status, stored.upstream_video_url, stored.error_code) == (
            "pending",
            "https://cdn.example.net/v.mp4",
            None,
        )
    else:
        assert terminal == [("running", "failed", "webhook")]
        assert stored.finished_at is not None and stored.updated_at == stored.finished_at
        assert (stored.upstream_video_url, stored.error_code, stored.error_detail) == (
            None,
            "upstream_failed",
            "no",
        )
