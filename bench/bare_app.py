"""The bare baseline of the throughput benchmark: a minimal FastAPI + asyncpg app on the
same database, doing only the database work of each measured route (read one job row by
id; insert one row). Run it as `uvicorn bench.bare_app:create_app --factory`."""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from fastapi import Body, FastAPI, HTTPException

BARE_TABLE = "CREATE TABLE IF NOT EXISTS bare_inserts (id uuid PRIMARY KEY, body jsonb NOT NULL)"


def create_app() -> FastAPI:
    dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=10, max_size=20)
        yield
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

    return app
