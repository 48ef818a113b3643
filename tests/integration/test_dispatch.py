"""Recorded jobs reach Seedance exactly once, with retries, under the in-flight cap.

Every test runs the service and the simulator over real HTTP on loopback; the
simulator's counters say how many upstream calls each job cost.
"""

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Job, JobEvent
from app.jobs.dispatcher import Dispatcher
from testkit.harness import Stack, commit_answer_lost, running_stack, wait_until

DISPATCH = {"dispatcher_enabled": True}


async def statuses(stack: Stack) -> Counter[str]:
    return Counter(job.status for job in await stack.jobs())


async def all_in(stack: Stack, *wanted: str, count: int) -> bool:
    found = await statuses(stack)
    return sum(found[s] for s in wanted) == count


async def at_least(stack: Stack, *wanted: str, count: int) -> bool:
    found = await statuses(stack)
    return sum(found[s] for s in wanted) >= count


def fresh_dispatcher(stack: Stack) -> Dispatcher:
    """A second dispatcher on the same database: what a restarted process runs."""
    state = stack.app.state.services
    return Dispatcher(
        state.sessionmaker, state.seedance, state.rate_limits, stack.settings, state.checks.inputs
    )


async def test_happy_path_submits_once_and_succeeds_by_callback(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(database_url, **DISPATCH) as stack:
        job = await stack.create_job(duration=5, resolution="480p", aspect_ratio="1:1")
        await wait_until(lambda: all_in(stack, "succeeded", count=1))
        body = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
        assert stack.sim.calls["generate"] == 1
        assert stack.sim.calls["status"] == 0
        (task,) = stack.sim.tasks.values()
        assert task.request == {
            "model": "seedance-2-mini",
            "prompt": "a paper boat drifting down a rainy street",
            "duration": 5,
            "resolution": "480p",
            "aspect_ratio": "1:1",
            "callback_url": task.request["callback_url"],
        }
        assert task.request["callback_url"].startswith(
            f"{stack.url}/webhooks/seedance/{job['id']}?sig="
        )
        assert body["video_url"].startswith(f"{stack.url}/media/videos/{job['id']}.mp4?")
        played = await stack.http.get(body["video_url"])
        assert played.content == task.video()  # the very bytes Seedance delivered
        assert body["media"]["width"] == body["media"]["height"] == 480
        assert body["submitted_at"] is not None and body["finished_at"] is not None
    async with db_engine.connect() as conn:
        moves = (
            await conn.execute(
                select(JobEvent.from_status, JobEvent.to_status, JobEvent.source).order_by(
                    JobEvent.id
                )
            )
        ).all()
    assert moves == [
        (None, "queued", "api"),
        ("queued", "running", "dispatcher"),
        ("running", "succeeded", "media"),  # once the video is in our storage
    ]


async def test_5xx_and_429_are_retried_and_each_job_is_still_one_task(database_url: str) -> None:
    faults = {"generate_5xx_rate": 0.3, "generate_429_rate": 0.3, "retry_after_seconds": 0}
    async with running_stack(database_url, sim_config=faults, **DISPATCH) as stack:
        for _ in range(20):
            await stack.create_job()
        await wait_until(lambda: all_in(stack, "succeeded", count=20))
        assert stack.sim.calls["generate_accepted"] == 20
        assert stack.sim.calls["generate"] > 20  # some calls were refused and retried
        assert len({job.upstream_task_id for job in await stack.jobs()}) == 20


async def test_a_refused_request_fails_the_job_without_retry(database_url: str) -> None:
    """A 400 (our callback host is local, which the real API refuses). A 402 or a refused
    key fails no job: the account pauses (test_credits.py)."""
    async with running_stack(
        database_url, sim_config={"reject_local_urls": True}, **DISPATCH
    ) as stack:
        job = await stack.create_job()
        await wait_until(lambda: all_in(stack, "failed", count=1))
        body = (await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers())).json()
        assert (body["status"], body["error_code"]) == ("failed", "upstream_rejected")
        assert body["error_detail"]
        assert stack.sim.calls["generate"] == 1


async def test_the_in_flight_cap_holds_under_a_burst_of_50(database_url: str) -> None:
    async with running_stack(
        database_url,
        sim_config={"generate_latency_seconds": 0.05},
        dispatcher_max_in_flight=4,
        **{**DISPATCH, "dispatcher_enabled": False, "media_worker_enabled": True},
    ) as stack:
        # the burst is all waiting before the dispatcher starts, however fast creates are
        await asyncio.gather(*(stack.create_job(prompt=f"variant {i}") for i in range(50)))
        dispatcher = fresh_dispatcher(stack)
        dispatcher.start()
        try:
            await wait_until(lambda: all_in(stack, "succeeded", count=50))
        finally:
            await dispatcher.stop()
        assert stack.sim.max_generate_in_flight == 4
        assert stack.sim.calls["generate"] == 50


async def test_restarting_the_dispatcher_mid_burst_loses_and_repeats_nothing(
    database_url: str,
) -> None:
    async with running_stack(
        database_url,
        sim_config={"generate_latency_seconds": 0.05},
        dispatcher_max_in_flight=3,
        **DISPATCH,
    ) as stack:
        await asyncio.gather(*(stack.create_job(prompt=f"variant {i}") for i in range(50)))
        await wait_until(lambda: at_least(stack, "running", "succeeded", count=10), interval=0.01)
        await stack.app.state.services.dispatcher.stop()  # graceful: in-flight submissions finish
        paused = await statuses(stack)
        assert paused["queued"] > 0
        replacement = fresh_dispatcher(stack)
        replacement.start()
        try:
            await wait_until(lambda: all_in(stack, "succeeded", count=50))
        finally:
            await replacement.stop()
        assert stack.sim.calls["generate"] == 50
        assert max(stack.sim.requests_by_callback.values()) == 1


async def test_a_crash_mid_submission_never_sends_a_job_twice(database_url: str) -> None:
    """Submissions cut off mid-request, once Seedance has them, have an unknown outcome for
    us: they are found again through their callbacks, and none is re-sent (the ones cut
    before Seedance had them fail after the grace:
    test_webhooks::test_unknown_submissions_without_a_callback_fail_after_the_grace)."""
    async with running_stack(
        database_url,
        dispatcher_max_in_flight=5,
        submit_unknown_grace_seconds=60.0,  # none waits for it: every cut one reached Seedance
        reconciler_enabled=True,
        **DISPATCH,
    ) as stack:
        dispatcher = stack.app.state.services.dispatcher
        stack.sim.generates_open.clear()
        await asyncio.gather(*(stack.create_job(prompt=f"variant {i}") for i in range(12)))
        # the five submissions in flight have reached Seedance, which holds their answers
        await wait_until(lambda: asyncio.sleep(0, stack.sim.generate_in_flight == 5))
        assert dispatcher.in_flight == 5
        for task in list(dispatcher._in_flight):  # what a SIGKILL does to requests on the wire
            task.cancel()
        await dispatcher.stop()
        stack.sim.generates_open.set()  # Seedance creates the five tasks
        replacement = fresh_dispatcher(stack)
        replacement.start()
        try:
            await wait_until(lambda: all_in(stack, "succeeded", count=12))
        finally:
            await replacement.stop()
        jobs = await stack.jobs()
        assert max(stack.sim.requests_by_callback.values()) == 1  # no job was sent twice
        assert stack.sim.calls["generate"] == 12
        # every task Seedance created, the cut-off requests' included, was found again
        assert {j.upstream_task_id for j in jobs} == set(stack.sim.tasks)


async def test_unknown_outcome_waits_for_the_callback_instead_of_resending(
    database_url: str,
) -> None:
    async with running_stack(
        database_url,
        sim_config={"generate_hang_rate": 1.0, "generate_hang_seconds": 3},
        seedance_read_timeout=0.5,
        **DISPATCH,
    ) as stack:
        job = await stack.create_job()
        await wait_until(lambda: all_in(stack, "succeeded", count=1))
        assert stack.sim.calls["generate"] == 1
        async with stack.app.state.services.sessionmaker() as session:
            events = list(
                await session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job["id"]).order_by(JobEvent.id)
                )
            )
            stored = await session.get(Job, job["id"])
        assert [(e.to_status, e.source) for e in events] == [
            ("queued", "api"),
            ("running", "webhook"),
            ("succeeded", "media"),
        ]
        assert stored is not None and stored.resolved_by == "webhook"
        assert stored is not None and stored.upstream_task_id in stack.sim.tasks


async def test_a_claim_whose_commit_answer_was_lost_is_undone_and_sent_once(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """The claim's COMMIT lands, then the connection dies before its answer (our database
    blinked): nothing was sent, so the claim is undone once the database answers, and the
    job is sent by the next round (it waited as an unknown outcome and failed
    `upstream_timeout` before)."""
    async with running_stack(database_url) as stack:  # its dispatcher is the test's
        created = await stack.create_job()
        dispatcher = fresh_dispatcher(stack)
        with (
            commit_answer_lost(stack, lambda job: job.submit_started_at is not None),
            pytest.raises(ConnectionResetError),
        ):
            await dispatcher.run_once()
        (job,) = await stack.jobs()
        assert (job.submit_started_at, job.submit_attempts) == (None, 0)
        assert stack.sim.calls["generate"] == 0
        await dispatcher.run_once()
        await dispatcher.drain()
        (job,) = await stack.jobs()
        assert (str(job.id), job.status, job.submit_attempts) == (created["id"], "running", 1)
        assert stack.sim.calls["generate"] == 1
