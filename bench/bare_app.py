"""The baselines of the throughput benchmark: a minimal FastAPI + asyncpg app on the same
database. Run it as `uvicorn bench.bare_app:create_app --factory`.

* bare: only the database work of the measured route (read one job row by id; insert
  one row), what the issue's targets are ratios against;
* same I/O (`/io/...`): every round trip our route makes, through the raw drivers and
  nothing else (no auth, validation, ORM, log line or metrics): the rate-limit script
  in Redis, then the same SQL. The best any code on this stack could do for the route.
* bare streams (`/sse`, `/plain-stream`): an sse-starlette stream with its defaults, and a
  plain Starlette `StreamingResponse`, each sending one event and then nothing: the
  memory per open stream that bench.sse_fanout compares ours with.
* plain upload (`/plain-upload`): the request body streamed into a file as it arrives, then
  removed, nothing else (no multipart parsing, no check, no storage): what bench.uploads
  compares `POST /uploads` with.
"""

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import orjson
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis
from sse_starlette import EventSourceResponse

from app.jobs.budget import today_started_at
from app.ratelimits.windows import MOVING_WINDOW_HIT

UPLOADS = Path(tempfile.gettempdir())
BARE_TABLE = "CREATE TABLE IF NOT EXISTS bare_inserts (id uuid PRIMARY KEY, body jsonb NOT NULL)"

# What a create sends in its transaction (app/jobs/budget.py, then the ORM's two inserts).
LOCK_OWNER = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
USAGE = """
SELECT coalesce(sum(estimated_cost) FILTER (WHERE created_at >= $1
         AND NOT (status IN ('canceled', 'failed') AND upstream_task_id IS NULL)), 0),
       count(*) FILTER (WHERE status IN ('queued', 'running'))
FROM jobs WHERE owner = $2 AND (created_at >= $1 OR status IN ('queued', 'running'))
"""
INSERT_JOB = """
INSERT INTO jobs (id, owner, model, prompt, duration, resolution, aspect_ratio, images,
  reference_video_urls, reference_audio_urls, estimated_cost, status, created_at,
  updated_at, submit_attempts, status_polls)
VALUES ($1, $2, 'seedance-2-mini', $3, 8, '720p', '16:9', '[]', '[]', '[]', 16, 'queued',
  $4, $4, 0, 0)
"""
INSERT_EVENT = """
INSERT INTO job_events (job_id, to_status, source, at) VALUES ($1, 'queued', 'api', $2)
RETURNING id
"""


def create_app() -> FastAPI:
    dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=10, max_size=20)
        app.state.redis = Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2)
        app.state.hit = app.state.redis.register_script(MOVING_WINDOW_HIT)
        yield
        await app.state.redis.aclose()
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/jobs/{job_id}")
    async def read_one(job_id: uuid.UUID) -> dict[str, Any]:
        row = await app.state.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        if row is None:
            raise HTTPException(404)
        return dict(row)

    @app.post("/insert", status_code=202)
    async def insert_one(body: dict[str, Any] = Body(...)) -> dict[str, str]:
        row_id = uuid.uuid4()
        await app.state.pool.execute(
            "INSERT INTO bare_inserts (id, body) VALUES ($1, $2::jsonb)",
            row_id,
            orjson.dumps(body).decode(),
        )
        return {"id": str(row_id)}

    async def rate_limit(owner: str) -> None:
        """The service's hit, with the benchmark's limit (10,000,000 a minute)."""
        await app.state.hit(keys=[f"bench-io:{owner}"], args=[10**7, 60])

    @app.get("/io/jobs/{job_id}")
    async def read_one_same_io(job_id: uuid.UUID, owner: str) -> dict[str, Any]:
        await rate_limit(owner)
        return await read_one(job_id)

    @app.post("/io/jobs", status_code=202)
    async def create_same_io(owner: str, body: dict[str, Any] = Body(...)) -> dict[str, str]:
        await rate_limit(owner)
        now = datetime.now(UTC)
        job_id = uuid.uuid4()
        async with app.state.pool.acquire() as conn, conn.transaction():
            await conn.execute(LOCK_OWNER, owner)
            await conn.fetchrow(USAGE, today_started_at(), owner)
            await conn.execute(INSERT_JOB, job_id, owner, body["prompt"], now)
            await conn.fetchval(INSERT_EVENT, job_id, now)
        return {"id": str(job_id), "status": "queued"}

    async def one_event_then_nothing(event: Any) -> AsyncIterator[Any]:
        yield event
        await asyncio.Event().wait()

    @app.get("/sse")
    async def bare_sse() -> EventSourceResponse:
        return EventSourceResponse(one_event_then_nothing({"event": "ready", "data": "{}"}))

    @app.get("/plain-stream")
    async def plain_stream() -> StreamingResponse:
        ready = b"event: ready\r\ndata: {}\r\n\r\n"
        return StreamingResponse(one_event_then_nothing(ready), media_type="text/event-stream")

    @app.post("/plain-upload", status_code=201)
    async def plain_upload(request: Request) -> dict[str, int]:
        size = 0
        async with await anyio.open_file(UPLOADS / uuid.uuid4().hex, "wb") as file:
            async for chunk in request.stream():
                await file.write(chunk)
                size += len(chunk)
        await anyio.Path(str(file.name)).unlink()
        return {"size": size}

    return app
