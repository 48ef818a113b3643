"""Test plumbing: real servers on loopback ports, settings for tests, tokens, waiting."""

import asyncio
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Job
from app.identity.tokens import issue_token
from app.main import create_app
from simulator import SimulatorConfig, create_simulator
from simulator.app import SimulatorState

SEEDANCE_TEST_KEY = "sim-test-key-4f9a1c"
# the local media backend's folder for every app the tests build (S3 tests set their own)
MEDIA_ROOT = tempfile.mkdtemp(prefix="seedance-bff-test-media-")
# a Postgres URL nothing listens on: connecting is refused at once
CLOSED_PORT_DB = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
# the loops that move a job: to the simulator and back (tests' stacks run none by default)
LIVE = {"dispatcher_enabled": True, "reconciler_enabled": True}


def plain_settings(**values: Any) -> Settings:
    """Settings from `values`, the environment and the defaults: no `.env` file is read."""
    return Settings(_env_file=None, **values)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # as uvicorn does for sockets it opens itself; without it every response waits ~40 ms
    # for a delayed ACK (Nagle), accepted connections inherit it
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A loopback port nothing listens on now (for servers started in another process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def serve(app: FastAPI, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Run `app` under uvicorn in this event loop, on a real loopback socket."""
    sock = sock or bound_socket()
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during startup")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        await task


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: fast loops and backoffs, background loops off unless asked."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "seedance_api_key": SEEDANCE_TEST_KEY,
        "seedance_base_url": "http://127.0.0.1:9/v2",
        "public_base_url": "http://127.0.0.1:9",
        "seedance_backoff_initial": 0.01,
        "seedance_backoff_max": 0.05,
        "dispatcher_enabled": False,
        "reconciler_enabled": False,
        "dispatcher_poll_seconds": 0.05,
        "dispatcher_retry_backoff_seconds": 0.05,
        "reconciler_poll_seconds": 0.05,
        "reconciler_backoff_initial_seconds": 0.2,
        "reconciler_status_rate_per_second": 200,
        "confirm_success_with_status": False,
        # generous limits: the tests of limits and budgets set their own
        "user_max_jobs_in_flight": 10_000,
        "user_daily_credit_budget": 10**9,
        "rate_limit_create": "100000/minute",
        "rate_limit_read": "100000/minute",
        "rate_limit_callback": "100000/minute",
        "rate_limit_upload": "100000/minute",
        "uploads_per_day": 100_000,
        "dispatcher_submits_per_second": 1000,
        "media_root": MEDIA_ROOT,
        "media_poll_seconds": 0.05,
        "media_retry_backoff_seconds": 0.05,
        "media_retry_backoff_max_seconds": 0.2,
        "outbound_enabled": False,
        "stats_rollup_enabled": False,
        "outbound_poll_seconds": 0.05,
        "outbound_retry_schedule": [0.05, 0.1, 0.2, 0.2, 0.2],
        "outbound_timeout_seconds": 2.0,
    }
    values.update(overrides)
    # the media worker runs where the dispatcher does: a stack that makes videos copies them
    # (several stacks share the test database, and a worker would claim others' copies)
    values.setdefault("media_worker_enabled", values["dispatcher_enabled"])
    return plain_settings(**values)


def bearer(settings: Settings, subject: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, subject, **kwargs)}"}


@dataclass
class Stack:
    """The service and the simulator, both served over real HTTP."""

    url: str
    app: FastAPI
    settings: Settings
    sim: SimulatorState
    sim_url: str
    http: httpx.AsyncClient

    def headers(self, subject: str = "alice") -> dict[str, str]:
        return bearer(self.settings, subject)

    async def create_job(self, subject: str = "alice", **body: Any) -> dict[str, Any]:
        body.setdefault("prompt", "a paper boat drifting down a rainy street")
        response = await self.http.post("/jobs", json=body, headers=self.headers(subject))
        assert response.status_code == 202, response.text
        return response.json()

    async def jobs(self) -> list[Job]:
        async with self.app.state.services.sessionmaker() as session:
            return list(await session.scalars(select(Job).order_by(Job.created_at)))


@asynccontextmanager
async def running_stack(
    database_url: str, sim_config: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Stack]:
    defaults = {
        "api_key": SEEDANCE_TEST_KEY,
        "task_seconds": 0.2,
        "reject_local_urls": False,
        "seed": 1234,
    }
    simulator = create_simulator(SimulatorConfig(**{**defaults, **(sim_config or {})}))
    async with serve(simulator) as sim_url:
        sock = bound_socket()
        settings = make_settings(
            database_url,
            **{
                "seedance_base_url": f"{sim_url}/v2",
                "public_base_url": url_of(sock),
                "media_trusted_origins": [sim_url],
                **overrides,
            },
        )
        app = create_app(settings)
        async with serve(app, sock) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield Stack(url, app, settings, simulator.state.sim, sim_url, http)


async def jobs_in(db_engine: AsyncEngine) -> list[Job]:
    """Every job in the database, oldest first (for tests whose jobs come from processes
    of their own, where no Stack holds a sessionmaker)."""
    async with AsyncSession(db_engine) as session:
        return list(await session.scalars(select(Job).order_by(Job.created_at)))


def tasks_per_job(sim: SimulatorState) -> Counter[str]:
    """Upstream tasks created per job (the callback URL names the job): 1 at most, always."""
    return Counter(
        task.request["callback_url"].split("?")[0].rsplit("/", 1)[1] for task in sim.tasks.values()
    )


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float = 20.0, interval: float = 0.05
) -> None:
    """Poll an async predicate until it holds, failing the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


def service_env(settings: dict[str, Any]) -> dict[str, str]:
    """The environment of a service run as its own process (settings as env variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SEEDANCE_"))}
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


async def start_service(port: int, env: dict[str, str]) -> asyncio.subprocess.Process:
    """`uvicorn app.main:create_app` in a process of its own, once it answers /healthz."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        env=env,
    )
    await wait_until_healthy(f"http://127.0.0.1:{port}", within=30)
    return process


async def wait_until_healthy(url: str, within: float) -> None:
    """Until the service at `url` answers /healthz with a 200."""
    async with httpx.AsyncClient() as http:

        async def up() -> bool:
            try:
                return (await http.get(f"{url}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(up, within=within)


async def run_command(
    *command: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a command (a tool the tests drive: schemathesis, npm, node) to its end; its
    output, or a failure that shows it."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{text}"
    return text


@contextmanager
def commit_answer_lost(stack: Stack, claims: Callable[[Job], bool]) -> Iterator[None]:
    """The first COMMIT of a transaction holding a job that `claims` picks out lands, and
    then its answer is lost (the connection dies under it: our database blinked); the
    commit raises ConnectionResetError as asyncpg's caller would see it."""
    session_class = stack.app.state.services.sessionmaker.kw["sync_session_class"]
    lost = [ConnectionResetError("the answer to COMMIT never came")]

    def note_claim(session: Session) -> None:
        jobs = [o for o in session.identity_map.values() if isinstance(o, Job)]
        session.info["claim"] = any(claims(job) for job in jobs)

    def lose_the_answer(session: Session) -> None:
        if lost and session.info.pop("claim", False):
            raise lost.pop()

    hooks = (("before_commit", note_claim), ("after_commit", lose_the_answer))
    for name, hook in hooks:
        event.listen(session_class, name, hook)
    try:
        yield
    finally:
        for name, hook in hooks:
            event.remove(session_class, name, hook)
