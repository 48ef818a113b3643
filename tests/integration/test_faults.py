"""The service keeps its promises under faults: upstream errors, lost and disordered
callbacks, tasks that never finish, an upstream that refuses connections, a database that
goes away, and a process killed with SIGKILL. Every job ends terminal with the right code,
none is sent upstream twice, and no job's history ever moves backwards."""

import asyncio
import itertools
import os
import signal
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from hashlib import sha256 as _sha256
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import CreditAccount, Job, JobEvent
from app.jobs.states import ALLOWED_MOVES, TERMINAL, JobStatus
from simulator import SimulatorConfig, create_simulator
from testkit.harness import (
    LIVE,
    MEDIA_ROOT,
    SEEDANCE_TEST_KEY,
    bearer,
    bound_socket,
    free_port,
    make_settings,
    running_stack,
    serve,
    service_env,
    start_service,
    tasks_per_job,
    url_of,
    wait_until,
)
from testkit.tcp_proxy import TcpProxy
from tests.integration.test_credits import ADMIN_TOKEN, ledger_is_whole

# fast safety nets, so the run ends in seconds
FAST_NETS = {
    "callback_overdue_base_seconds": 1.0,
    "callback_overdue_per_video_second": 0.0,
    "reconciler_backoff_initial_seconds": 0.3,
    "reconciler_backoff_max_seconds": 1.0,
    # an unknown outcome's callback comes 0.5 s after its task: a busy 2-core machine has
    # been seen to take more than 3.5 s more to record it, and a job failed by then leaves
    # its task orphaned; the grace is what the machine needs, not what the faults take
    "submit_unknown_grace_seconds": 8.0,
    "job_hard_deadline_seconds": 10.0,
}


async def all_terminal(engine: AsyncEngine, count: int) -> bool:
    async with engine.connect() as conn:
        statuses = (await conn.execute(select(Job.status))).scalars().all()
    return len(statuses) == count and all(JobStatus(s) in TERMINAL for s in statuses)


async def assert_histories_only_move_forward(engine: AsyncEngine) -> None:
    """Each job's events chain (from = previous to), follow the table, end in one terminal."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(JobEvent).order_by(JobEvent.id))).all()
    history: defaultdict[uuid.UUID, list[Any]] = defaultdict(list)
    for row in rows:
        history[row.job_id].append(row)
    for job_id, events in history.items():
        assert events[0].from_status is None and events[0].to_status == JobStatus.QUEUED
        for before, after in itertools.pairwise(events):
            assert after.from_status == before.to_status, job_id
            assert JobStatus(after.to_status) in ALLOWED_MOVES[JobStatus(before.to_status)]
        assert [JobStatus(e.to_status) in TERMINAL for e in events].count(True) == 1, job_id


async def test_200_jobs_under_mixed_faults_end_right_and_are_sent_once(
    database_url: str, db_engine: AsyncEngine
) -> None:
    faults = {
        "generate_5xx_rate": 0.15,
        "generate_429_rate": 0.10,
        "retry_after_seconds": 0,
        "generate_hang_rate": 0.04,  # accepted upstream, but we time out: outcome unknown
        "generate_hang_seconds": 1.5,
        "task_failure_rate": 0.10,
        "never_finish_rate": 0.03,
        "callback_loss_rate": 0.20,
        "callback_duplicate_rate": 0.20,
        "callback_out_of_order_rate": 0.20,
        "callback_delay_seconds": 0.3,
        "seed": 9,
    }
    async with running_stack(
        database_url,
        sim_config=faults,
        seedance_read_timeout=0.5,
        dispatcher_max_in_flight=16,
        dispatcher_max_submit_attempts=10,
        **FAST_NETS,
        **LIVE,
    ) as stack:
        await asyncio.gather(
            *(stack.create_job(f"user-{i % 7}", prompt=f"variant {i}") for i in range(200))
        )
        await wait_until(lambda: all_terminal(db_engine, 200), within=90)
        jobs = {str(job.id): job for job in await stack.jobs()}
        sim = stack.sim

    assert max(tasks_per_job(sim).values()) == 1  # no job was ever sent twice
    for job in jobs.values():
        task = sim.tasks.get(job.upstream_task_id or "")
        if task is None:  # no task known: it was never accepted, or its callback was lost
            assert job.status == "failed"
            assert job.error_code in {"upstream_timeout", "upstream_unavailable"}
        elif task.never_finish:
            assert (job.status, job.error_code) == ("failed", "upstream_timeout")
        elif task.will_fail:
            assert (job.status, job.error_code) == ("failed", "upstream_failed")
        else:
            assert job.status == "succeeded" and job.upstream_video_url == task.video_url
            assert job.media_status == "stored" and job.media_sha256 == sha256(task.video())
    # every task Seedance created whose outcome came back is attached to its own job
    attached = {j.upstream_task_id for j in jobs.values() if j.upstream_task_id}
    orphans = set(sim.tasks) - attached
    assert all(sim.tasks[t].task_id in sim.lost_callbacks for t in orphans)
    # the faults really happened, and most jobs still succeeded
    assert sim.calls["generate"] > sim.calls["generate_accepted"]  # 5xx/429 were retried
    assert sim.callbacks["lost"] and sim.callbacks["duplicate_200"] and sim.callbacks["stale_200"]
    assert sum(j.status == "succeeded" for j in jobs.values()) >= 140
    await assert_histories_only_move_forward(db_engine)


def sha256(data: bytes) -> str:
    return _sha256(data).hexdigest()


async def test_an_upstream_refusing_connections_is_waited_out(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """Connection refused certainly sent nothing: jobs are retried with backoff, then sent
    once when Seedance is back."""
    upstream = bound_socket()  # bound but not listening: connections are refused
    simulator = create_simulator(
        SimulatorConfig(api_key=SEEDANCE_TEST_KEY, task_seconds=0.2, reject_local_urls=False)
    )
    async with running_stack(
        database_url,
        seedance_base_url=f"{url_of(upstream)}/v2",
        media_trusted_origins=[url_of(upstream)],
        dispatcher_max_submit_attempts=50,
        dispatcher_retry_backoff_seconds=0.05,
        **LIVE,
    ) as stack:
        for i in range(10):
            await stack.create_job(prompt=f"variant {i}")

        async def retried() -> bool:
            return all(j.submit_attempts >= 2 for j in await stack.jobs())

        await wait_until(retried)
        assert {j.status for j in await stack.jobs()} == {"queued"}
        async with serve(simulator, upstream):
            await wait_until(lambda: all_terminal(db_engine, 10))
        assert {j.status for j in await stack.jobs()} == {"succeeded"}
        assert simulator.state.sim.calls["generate"] == 10
    await assert_histories_only_move_forward(db_engine)


async def test_a_database_outage_is_503_and_the_service_recovers_alone(
    database_url: str, db_engine: AsyncEngine
) -> None:
    proxy = TcpProxy("127.0.0.1", make_url(database_url).port or 5432)
    await proxy.start()
    proxied = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    async with running_stack(
        proxied.render_as_string(hide_password=False), **FAST_NETS, **LIVE
    ) as stack:
        before = [await stack.create_job(prompt=f"before {i}") for i in range(5)]
        reads = [f"/jobs/{job['id']}" for job in before]
        # pooled connections for the driver-connection path of GET /jobs/{id}
        await asyncio.gather(*(stack.http.get(path, headers=stack.headers()) for path in reads))
        await proxy.cut()
        during = await asyncio.gather(
            *(
                stack.http.post("/jobs", json={"prompt": "during"}, headers=stack.headers())
                for _ in range(10)
            ),
            stack.http.get("/jobs", headers=stack.headers()),
            *(stack.http.get(path, headers=stack.headers()) for path in reads),
        )
        for response in during:
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "database_unavailable"
            assert response.headers["retry-after"]
        assert (await stack.http.get("/readyz")).status_code == 503
        await proxy.start()  # the database is back on the same address: no restart of ours

        async def ready() -> bool:
            return (await stack.http.get("/readyz")).status_code == 200

        await wait_until(ready)
        for path in reads:  # no dead connection went back to the pool
            assert (await stack.http.get(path, headers=stack.headers())).status_code == 200
        after = await stack.create_job(prompt="after")
        await wait_until(lambda: all_terminal(db_engine, 6))
        ids = {str(j.id) for j in await stack.jobs()}
        assert ids == {job["id"] for job in [*before, after]}  # nothing lost, nothing extra
        assert {j.status for j in await stack.jobs()} == {"succeeded"}
    await proxy.cut()


async def test_a_job_whose_deadline_passed_while_the_database_was_away_is_not_failed(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """The task finishes upstream while our database is away and its callback is lost; the
    outage lasts past the job's hard deadline. When the database is back the reconciler
    does not fail the job: the outage does not count against it, and a last look at the
    deadline finds the video (before: `upstream_timeout` at the first round back)."""
    proxy = TcpProxy("127.0.0.1", make_url(database_url).port or 5432)
    await proxy.start()
    proxied = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    async with running_stack(
        proxied.render_as_string(hide_password=False),
        sim_config={"callback_loss_rate": 1.0, "task_seconds": 0.5},
        callback_overdue_base_seconds=3600.0,  # no poll but the last look at the deadline
        job_hard_deadline_seconds=3.0,
        **LIVE,
    ) as stack:
        created = await stack.create_job()

        async def running() -> bool:
            return any(j.status == "running" for j in await stack.jobs())

        await wait_until(running)
        (job,) = await stack.jobs()
        assert job.submitted_at is not None
        await proxy.cut()
        deadline = job.submitted_at.timestamp() + stack.settings.job_hard_deadline_seconds

        async def past_the_deadline_and_done_upstream() -> bool:
            task = stack.sim.tasks[job.upstream_task_id or ""]
            done = task.status(stack.sim.config.task_seconds) == "SUCCESS"
            return done and datetime.now(UTC).timestamp() > deadline + 1

        await wait_until(past_the_deadline_and_done_upstream)
        await proxy.start()
        await wait_until(lambda: all_terminal(db_engine, 1), within=60)
        (ended,) = await stack.jobs()
    await proxy.cut()
    assert str(ended.id) == created["id"]
    assert (ended.status, ended.error_code) == ("succeeded", None)
    assert ended.resolved_by == "reconciler"


GRANT = 10_000


async def test_sigkill_mid_burst_loses_nothing_and_sends_nothing_twice(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """The service runs as its own process; it is SIGKILLed while a burst of creates and
    submissions is on the wire, then restarted. Clients retry with their Idempotency-Keys.
    The credits ledger is on: each job is held once and settled once, whatever the kill
    cut (issue 35)."""
    port = free_port()
    simulator = create_simulator(
        SimulatorConfig(
            api_key=SEEDANCE_TEST_KEY,
            task_seconds=1.0,
            generate_latency_seconds=0.2,
            reject_local_urls=False,
        )
    )
    async with serve(simulator) as sim_url:
        settings = {
            "database_url": database_url,
            "seedance_api_key": SEEDANCE_TEST_KEY,
            "seedance_base_url": f"{sim_url}/v2",
            "public_base_url": f"http://127.0.0.1:{port}",
            "dispatcher_poll_seconds": 0.05,
            "reconciler_poll_seconds": 0.1,
            "dispatcher_max_in_flight": 8,
            "rate_limit_create": "100000/minute",
            "user_max_jobs_in_flight": 1000,
            "media_root": MEDIA_ROOT,
            "media_trusted_origins": sim_url,
            "credits_ledger": True,
            "admin_token": ADMIN_TOKEN,
            **FAST_NETS,
        }
        env = service_env(settings)
        headers = bearer(make_settings(database_url), "alice")
        keys = [f"burst-{i}" for i in range(60)]
        accepted: dict[str, str] = {}
        service = await start_service(port, env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                granted = await http.post(
                    "/admin/users/alice/credits",
                    json={"amount": GRANT, "reason": "burst"},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                )
                assert granted.status_code == 201, granted.text

                async def create(key: str) -> None:
                    try:
                        response = await http.post(
                            "/jobs",
                            json={"prompt": f"variant {key}"},
                            headers={**headers, "Idempotency-Key": key},
                        )
                    except httpx.TransportError:
                        return  # the process died under this request: retried below
                    if response.status_code in (200, 202):
                        accepted[key] = response.json()["id"]

                burst = [asyncio.create_task(create(key)) for key in keys]
                sim = simulator.state.sim
                await wait_until(lambda: asyncio.sleep(0, sim.calls["generate"] >= 8), within=30)
                service.send_signal(signal.SIGKILL)
                await service.wait()
                await asyncio.gather(*burst)
                killed_during_submission = sim.generate_in_flight > 0 or len(accepted) < 60
                service = await start_service(port, env)
                for key in keys:  # what a client does after a network error: retry, same key
                    if key not in accepted:
                        await create(key)
                assert set(accepted) == set(keys)
                await wait_until(lambda: all_terminal(db_engine, 60), within=60)
        finally:
            service.send_signal(signal.SIGKILL)
            await service.wait()

    async with AsyncSession(db_engine) as session:
        jobs = list(await session.scalars(select(Job)))
    assert killed_during_submission
    assert {str(j.id) for j in jobs} == set(accepted.values())  # no job lost or duplicated
    assert {j.idempotency_key for j in jobs} == set(keys)
    assert max(tasks_per_job(sim).values()) == 1  # none was sent upstream twice
    for job in jobs:  # every job Seedance took is found again; the others time out unsent
        if job.status == "succeeded":
            assert job.upstream_task_id in sim.tasks
        else:
            assert (job.status, job.error_code) == ("failed", "upstream_timeout")
    assert sum(j.status == "succeeded" for j in jobs) >= 50
    await assert_histories_only_move_forward(db_engine)
    await ledger_is_whole(db_engine)  # one hold and one settlement per job, as its state says
    async with AsyncSession(db_engine) as session:
        alice = await session.scalar(select(CreditAccount).where(CreditAccount.subject == "alice"))
    assert alice is not None and alice.debits_pending == 0
    charged = sum(j.estimated_cost for j in jobs if j.status == "succeeded")
    assert alice.credits_posted - alice.debits_posted == GRANT - charged


def postgres_control(action: str) -> list[str]:
    """How to stop or start the test server: TEST_POSTGRES_STOP / TEST_POSTGRES_START if
    set; else Debian's pg_ctlcluster (CI, as root); else the compose file's service (where
    `make test` started it with docker compose)."""
    override = os.environ.get(f"TEST_POSTGRES_{action.upper()}")
    if override:
        return override.split()
    if os.path.isdir("/etc/postgresql"):
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
        return [*command, "--", "-m", "fast"] if action == "stop" else command
    return ["docker", "compose", action, "postgres"]


async def run(command: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(*command)
    assert await process.wait() == 0, command


@pytest.mark.serial
async def test_a_real_postgres_restart_under_load_is_503_then_recovers(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """The server itself is stopped (sessions end with 'terminating connection due to
    administrator command') and started again while requests keep coming."""
    statuses: Counter[int] = Counter()
    accepted: list[str] = []
    problems: list[str] = []
    async with running_stack(database_url, **FAST_NETS, **LIVE) as stack:
        stopping = asyncio.Event()

        async def load() -> None:
            while not stopping.is_set():
                response = await stack.http.post(
                    "/jobs", json={"prompt": "under load"}, headers=stack.headers()
                )
                statuses[response.status_code] += 1
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                elif response.json().get("code") != "database_unavailable":
                    problems.append(response.text)
                if accepted:  # and a read on the driver-connection path
                    read = await stack.http.get(f"/jobs/{accepted[-1]}", headers=stack.headers())
                    statuses[read.status_code] += 1
                    if read.status_code != 200 and read.json().get("code") != (
                        "database_unavailable"
                    ):
                        problems.append(read.text)
                await asyncio.sleep(0.01)

        loaders = [asyncio.create_task(load()) for _ in range(4)]
        try:
            await wait_until(lambda: asyncio.sleep(0, len(accepted) >= 10))
            await run(postgres_control("stop"))
            down = await stack.http.post("/jobs", json={"prompt": "x"}, headers=stack.headers())
            assert (down.status_code, down.json()["code"]) == (503, "database_unavailable")
            assert (await stack.http.get("/readyz")).status_code == 503
        finally:
            await run(postgres_control("start"))

        async def ready() -> bool:
            return (await stack.http.get("/readyz")).status_code == 200

        await wait_until(ready, within=60)
        after_restart = len(accepted)
        await wait_until(lambda: asyncio.sleep(0, len(accepted) >= after_restart + 10))
        stopping.set()
        await asyncio.gather(*loaders)
        await db_engine.dispose()  # the suite's own pool died with the server too
        await wait_until(lambda: all_terminal(db_engine, len(accepted)), within=60)
        stored = {str(job.id) for job in await stack.jobs()}

    assert problems == []  # every failure was a 503 problem+json, never a 500
    assert set(statuses) <= {200, 202, 503} and statuses[503] >= 1 and statuses[200] >= 1
    assert stored == set(accepted)  # every accepted job is there; no unaccepted one is
    await assert_histories_only_move_forward(db_engine)


async def test_sigterm_ends_open_streams_cleanly(database_url: str) -> None:
    """A deploy stops the process with SIGTERM: open SSE streams are completed, not cut
    (clients resume elsewhere with Last-Event-ID), and the process exits promptly."""
    port = free_port()
    env = service_env(
        {
            "database_url": database_url,
            "seedance_api_key": SEEDANCE_TEST_KEY,
            "dispatcher_enabled": "false",
            "reconciler_enabled": "false",
            "sse_heartbeat_seconds": 30,
        }
    )
    headers = bearer(make_settings(database_url), "alice")
    service = await start_service(port, env)
    try:
        timeout = httpx.Timeout(10, read=None)  # streams are bounded by wait_for below
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as http:
            job = (await http.post("/jobs", json={"prompt": "boat"}, headers=headers)).json()

            async def follow(path: str) -> list[str]:
                lines = []
                async with http.stream("GET", path, headers=headers) as response:
                    assert response.status_code == 200
                    opened.release()
                    async for line in response.aiter_lines():  # raises if the body is cut
                        lines.append(line)
                return lines

            opened = asyncio.Semaphore(0)
            streams = [
                asyncio.create_task(follow(f"/jobs/{job['id']}/events")),
                asyncio.create_task(follow("/events")),
            ]
            for _ in streams:
                await asyncio.wait_for(opened.acquire(), 10)
            started = asyncio.get_running_loop().time()
            service.send_signal(signal.SIGTERM)
            job_lines, _ = await asyncio.wait_for(asyncio.gather(*streams), 10)
            await asyncio.wait_for(service.wait(), 10)
            assert asyncio.get_running_loop().time() - started < 5
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()
    assert any(line.startswith("data:") for line in job_lines)  # the queued move came first
