"""The queue in front of the Seedance account: its cap holds across processes, a 429 never
fails or costs a job, light users are not stuck behind heavy backlogs, canceling and
deleting free places and slots, and a restart loses and duplicates nothing."""

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import UpstreamCapacity
from app.main import create_app
from simulator import SimulatorConfig, create_simulator
from testkit.harness import (
    LIVE,
    MEDIA_ROOT,
    SEEDANCE_TEST_KEY,
    bearer,
    bound_socket,
    free_port,
    jobs_in,
    make_settings,
    running_stack,
    serve,
    service_env,
    start_service,
    tasks_per_job,
    url_of,
    wait_until,
)

# a 429 counted as an attempt would fail the job at once
NO_SECOND_CHANCE = {"dispatcher_max_submit_attempts": 1}


async def all_ended(db_engine: AsyncEngine, count: int) -> bool:
    jobs = await jobs_in(db_engine)
    return len(jobs) == count and all(j.status in {"succeeded", "failed", "canceled"} for j in jobs)


async def test_two_processes_keep_to_the_cap_at_ten_times_demand_through_a_restart(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """SEEDANCE_MAX_CONCURRENT_TASKS=3 on two service processes (one restarted with SIGTERM
    halfway), demand of ten times the cap from heavy and light users: the account never
    renders more than 3 for us, never answers 429, and every job succeeds once."""
    simulator = create_simulator(
        SimulatorConfig(
            api_key=SEEDANCE_TEST_KEY,
            task_seconds=0.5,
            reject_local_urls=False,
            max_concurrent_tasks=3,
        )
    )
    port = free_port()
    async with serve(simulator) as sim_url:
        common = {
            "seedance_max_concurrent_tasks": 3,
            "dispatcher_poll_seconds": 0.05,
            "callback_overdue_base_seconds": 2.0,
            "callback_overdue_per_video_second": 0.0,
            "reconciler_backoff_initial_seconds": 0.3,
            "reconciler_backoff_max_seconds": 1.0,
            **NO_SECOND_CHANCE,
        }
        other = {
            "database_url": database_url,
            "seedance_api_key": SEEDANCE_TEST_KEY,
            "seedance_base_url": f"{sim_url}/v2",
            "public_base_url": f"http://127.0.0.1:{port}",
            "media_root": MEDIA_ROOT,
            "media_trusted_origins": sim_url,
            "user_max_jobs_in_flight": 1000,
            "rate_limit_create": "100000/minute",
            **common,
        }
        service = await start_service(port, service_env(other))
        try:
            sock = bound_socket()
            settings = make_settings(
                database_url,
                seedance_base_url=f"{sim_url}/v2",
                public_base_url=url_of(sock),
                media_trusted_origins=[sim_url],
                **LIVE,
                **common,
            )
            async with (
                serve(create_app(settings), sock) as url,
                httpx.AsyncClient(base_url=url, timeout=30) as http,
            ):

                async def create(subject: str) -> None:
                    headers = bearer(settings, subject)
                    response = await http.post("/jobs", json={"prompt": "x"}, headers=headers)
                    assert response.status_code == 202, response.text

                await asyncio.gather(*(create(f"heavy-{i % 3}") for i in range(30)))
                await asyncio.gather(*(create(f"light-{i}") for i in range(6)))
                sim = simulator.state.sim
                await wait_until(lambda: asyncio.sleep(0, sim.calls["generate_accepted"] >= 12))
                service.send_signal(signal.SIGTERM)  # a rolling restart of the other replica
                await asyncio.wait_for(service.wait(), 30)
                service = await start_service(port, service_env(other))
                await wait_until(lambda: all_ended(db_engine, 36), within=120)
        finally:
            service.send_signal(signal.SIGTERM)
            await service.wait()
    jobs = await jobs_in(db_engine)
    assert Counter(j.status for j in jobs) == {"succeeded": 36}
    assert all(j.submit_attempts == 1 for j in jobs)
    assert sim.max_rendering == 3  # used to the full, never above
    assert sim.calls["generate_429"] == 0
    assert max(tasks_per_job(sim).values()) == 1 and len(sim.tasks) == 36


async def test_a_learned_cap_loses_no_job_to_429s(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """No cap set and an account that takes 2 tasks: the 429s teach the service the cap;
    none fails a job or counts as an attempt, and they stay few."""
    sim_config = {"max_concurrent_tasks": 2, "task_seconds": 0.4, "retry_after_seconds": 1}
    async with running_stack(
        database_url, sim_config=sim_config, dispatcher_max_in_flight=8, **LIVE, **NO_SECOND_CHANCE
    ) as stack:
        started = time.monotonic()
        await asyncio.gather(
            *(stack.create_job(f"user-{i % 4}", prompt=f"variant {i}") for i in range(20))
        )
        await wait_until(lambda: all_ended(db_engine, 20), within=60)
        elapsed = time.monotonic() - started
        async with AsyncSession(db_engine) as session:
            learned = await session.get(UpstreamCapacity, 1)
        sim = stack.sim
        admin = bearer(stack.settings, "ops", admin=True)
        stats = (await stack.http.get("/admin/stats", headers=admin)).json()
    assert 0 < stats["median_seconds_in_queue"] <= stats["p95_seconds_in_queue"]
    jobs = await jobs_in(db_engine)
    assert Counter(j.status for j in jobs) == {"succeeded": 20}
    assert all(j.submit_attempts == 1 for j in jobs)
    # learned from the 429s: the renders a 429 counts are those we know of, so a task
    # accepted whose answer is not yet recorded is missed and the last lesson may be 1
    # (a probe above it raises it again); never above the account's 2 and one in flight
    assert learned is not None and learned.learned_cap in {1, 2, 3}
    # one burst (at most the 8 in flight), then a probe a second at most, however long the
    # run took on this machine
    assert 0 < sim.calls["generate_429"] <= 8 + int(elapsed) + 1
    assert max(tasks_per_job(sim).values()) == 1


async def test_a_light_user_goes_next_behind_a_heavy_backlog(
    db_engine: AsyncEngine, database_url: str
) -> None:
    """Cap 2, a heavy user with 30 jobs waiting: a job of another user is the next one
    sent (FIFO would send it after the 28 before it)."""
    async with running_stack(
        database_url,
        sim_config={"task_seconds": 1.0},
        seedance_max_concurrent_tasks=2,
        **LIVE,
    ) as stack:
        for i in range(30):
            await stack.create_job("heavy", prompt=f"heavy {i}")

        async def heavy_running() -> bool:
            return sum(j.status == "running" for j in await jobs_in(db_engine)) == 2

        await wait_until(heavy_running)
        light = await stack.create_job("light")

        async def light_sent() -> bool:
            return any(
                str(j.id) == light["id"] and j.submitted_at for j in await jobs_in(db_engine)
            )

        await wait_until(light_sent, within=30)
        jobs = await jobs_in(db_engine)
    light_job = next(j for j in jobs if str(j.id) == light["id"])
    assert light_job.submitted_at is not None
    overtaking = [
        j
        for j in jobs
        if j.owner == "heavy"
        and j.submitted_at is not None
        and light_job.created_at < j.submitted_at < light_job.submitted_at
    ]
    assert len(overtaking) <= 1  # at most a claim already under way when it arrived


async def test_cancel_frees_a_place_and_a_deleted_running_job_frees_its_slot_when_its_render_ends(
    db_engine: AsyncEngine, database_url: str
) -> None:
    async with running_stack(
        database_url,
        sim_config={"task_seconds": 1.5, "max_concurrent_tasks": 1},
        seedance_max_concurrent_tasks=1,
        **LIVE,
    ) as stack:
        first = await stack.create_job()

        async def running(job_id: str) -> bool:
            return any(
                str(j.id) == job_id and j.status == "running" for j in await jobs_in(db_engine)
            )

        await wait_until(lambda: running(first["id"]))
        second, third = await stack.create_job(), await stack.create_job()
        canceled = await stack.http.post(f"/jobs/{second['id']}/cancel", headers=stack.headers())
        assert canceled.json()["status"] == "canceled"
        deleted = await stack.http.delete(f"/jobs/{first['id']}", headers=stack.headers())
        assert deleted.status_code == 204
        await wait_until(lambda: running(third["id"]), within=30)
        jobs = {str(j.id): j for j in await jobs_in(db_engine)}
    assert jobs[second["id"]].upstream_task_id is None  # never sent
    # the deleted job's render held the account's only slot until Seedance finished it:
    # the third was never sent while it rendered (Seedance would have answered 429)
    assert jobs[first["id"]].status == "canceled"
    assert stack.sim.calls["generate_429"] == 0
    assert len(stack.sim.tasks) == 2


async def test_a_job_that_waits_too_long_fails_queue_timeout_and_costs_nothing(
    database_url: str,
) -> None:
    async with running_stack(
        database_url,
        sim_config={"task_seconds": 30},
        seedance_max_concurrent_tasks=1,
        queue_max_wait_seconds=1.0,
        **LIVE,
    ) as stack:
        first = await stack.create_job()
        waiting = await stack.create_job()
        headers = stack.headers()

        async def timed_out() -> bool:
            body = (await stack.http.get(f"/jobs/{waiting['id']}", headers=headers)).json()
            return body["status"] == "failed"

        await wait_until(timed_out, within=30)
        body = (await stack.http.get(f"/jobs/{waiting['id']}", headers=headers)).json()
        usage = (await stack.http.get("/me/usage", headers=headers)).json()
    assert body["error_code"] == "queue_timeout"
    assert len(stack.sim.tasks) == 1
    assert usage["spent_today"] == first["estimated_cost"]  # the timed-out job costs nothing


async def queue_events(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    until: Callable[[dict[str, Any]], bool],
    on_each: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """The `queue` events of the caller's stream, until one satisfies `until`; `on_each`
    is given the events so far after each one (to act when the stream was told enough)."""
    seen: list[dict[str, Any]] = []
    async with http.stream("GET", "/events", headers=headers, timeout=30) as response:
        assert response.status_code == 200
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind == "queue":
                seen.append(json.loads(line[5:]))
                if until(seen[-1]):
                    return seen
                if on_each is not None:
                    await on_each(seen)
    raise AssertionError(f"the stream ended first: {seen}")


async def test_places_in_line_on_reads_streams_and_the_admin_view(
    database_url: str,
) -> None:
    """Cap 1, alice's render holding it: her next two jobs wait behind bob's one (fair
    share); reads and `GET /admin/queue` say so, her stream is told each place, and when
    bob cancels, that her next job is now first."""
    async with running_stack(
        database_url,
        sim_config={"task_seconds": 30},
        seedance_max_concurrent_tasks=1,
        queue_board_seconds=0.1,
        **LIVE,
    ) as stack:
        first = await stack.create_job("alice")

        async def sent() -> bool:
            body = (await stack.http.get(f"/jobs/{first['id']}", headers=stack.headers())).json()
            return body["status"] == "running"

        await wait_until(sent)
        second, third = await stack.create_job("alice"), await stack.create_job("alice")
        bobs = await stack.create_job("bob")
        places = {}
        for subject, job in (("alice", second), ("alice", third), ("bob", bobs)):
            read = await stack.http.get(f"/jobs/{job['id']}", headers=stack.headers(subject))
            places[job["id"]] = read.json()["queue_position"]
        assert places == {bobs["id"]: 0, second["id"]: 1, third["id"]: 2}
        running = (await stack.http.get(f"/jobs/{first['id']}", headers=stack.headers())).json()
        assert (running["queue_position"], running["estimated_start_at"]) == (None, None)

        admin = bearer(stack.settings, "ops", admin=True)
        view = (await stack.http.get("/admin/queue", headers=admin)).json()
        assert [item["job_id"] for item in view["order"]] == [bobs["id"], second["id"], third["id"]]
        assert (view["cap"], view["in_use"], view["waiting"]) == (1, 1, 3)
        assert {o["owner"]: (o["waiting"], o["upstream"]) for o in view["owners"]} == {
            "alice": (2, 1),
            "bob": (1, 0),
        }

        canceled: list[int] = []

        async def cancel_bobs_when_told_places(seen: list[dict[str, Any]]) -> None:
            told = {(e["job_id"], e["queue_position"]) for e in seen}
            if not canceled and {(second["id"], 1), (third["id"], 2)} <= told:
                answer = await stack.http.post(
                    f"/jobs/{bobs['id']}/cancel", headers=stack.headers("bob")
                )
                canceled.append(answer.status_code)

        events = await queue_events(
            stack.http,
            stack.headers("alice"),
            lambda e: e["job_id"] == second["id"] and e["queue_position"] == 0,
            cancel_bobs_when_told_places,
        )
        assert canceled == [200]
        metrics = (await stack.http.get("/metrics", headers=admin)).text
    assert {e["job_id"] for e in events} <= {second["id"], third["id"]}  # hers only
    told = [(e["job_id"], e["queue_position"]) for e in events]
    assert (second["id"], 1) in told and (third["id"], 2) in told
    assert 'seedance_queued_jobs{plan="default"} 2.0' in metrics


async def test_fifo_places_are_the_order_of_creation(database_url: str) -> None:
    """QUEUE_POLICY=fifo: a reading and newcomers place jobs by age, owners aside."""
    async with running_stack(database_url, queue_policy="fifo", queue_board_seconds=3600) as stack:
        jobs = [await stack.create_job(subject) for subject in ("alice", "alice", "bob")]
        assert [job["queue_position"] for job in jobs] == [0, 1, 2]
        admin = bearer(stack.settings, "ops", admin=True)
        view = (await stack.http.get("/admin/queue", headers=admin)).json()  # read afresh
        assert [item["job_id"] for item in view["order"]] == [job["id"] for job in jobs]


async def test_a_create_is_answered_with_its_place_without_a_reading_of_its_own(
    database_url: str,
) -> None:
    """Creates do not wait for the queue to be read again (at thousands of waiting jobs
    that halved a replica's creates): a job newer than the reading is placed in it as its
    owner's newest, where fair share would put it."""
    async with running_stack(database_url, queue_board_seconds=3600) as stack:  # one reading
        first = await stack.create_job("alice")  # no reading yet: this create makes it
        second, third = await stack.create_job("alice"), await stack.create_job("alice")
        bobs = await stack.create_job("bob")
        answered = [job["queue_position"] for job in (first, second, third, bobs)]
        assert answered == [0, 1, 2, 1]  # bob's first job goes before alice's second
        assert all(job["estimated_start_at"] is None for job in (first, bobs))  # no render yet
        admin = bearer(stack.settings, "ops", admin=True)
        view = (await stack.http.get("/admin/queue", headers=admin)).json()  # read afresh
        assert [item["job_id"] for item in view["order"]] == [
            first["id"],
            bobs["id"],
            second["id"],
            third["id"],
        ]
