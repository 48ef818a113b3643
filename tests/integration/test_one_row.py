"""OneRowStatement on real Postgres: SQLAlchemy's types both ways, its errors, and a
connection that died under a statement (it must not go back to the pool)."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, func, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.availability import is_database_unavailable
from app.db.models import Job
from app.db.one_row import OneRowStatement
from testkit.databases import job_row

BACKEND_PID = OneRowStatement(select(func.pg_backend_pid().label("pid")))


async def test_types_are_processed_like_sqlalchemys(db_engine: AsyncEngine) -> None:
    row = job_row(1, "alice", "queued", datetime.now(UTC))
    async with db_engine.begin() as conn:
        await conn.execute(Job.__table__.insert(), [{**row, "images": ["https://x/a.png"]}])
    by_id = OneRowStatement(select(Job.__table__).where(Job.id == bindparam("job_id")))
    read = await by_id.first(db_engine, job_id=row["id"])
    assert read is not None
    assert (read["id"], read["images"], read["reference_video_urls"]) == (
        row["id"],
        ["https://x/a.png"],
        [],
    )
    assert read["created_at"] == row["created_at"] and read["created_at"].tzinfo is not None
    assert await by_id.first(db_engine, job_id=uuid.uuid4()) is None


async def test_a_dead_connection_fails_once_as_unavailable_then_is_replaced(
    database_url: str, db_engine: AsyncEngine
) -> None:
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0)
    try:
        first = await BACKEND_PID.first(engine)
        assert first is not None
        async with db_engine.connect() as admin:  # the server ends that session
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first["pid"]})
        with pytest.raises(sa_exc.DBAPIError) as failure:
            await BACKEND_PID.first(engine)
        assert failure.value.connection_invalidated and is_database_unavailable(failure.value)
        again = await BACKEND_PID.first(engine)
        assert again is not None and again["pid"] != first["pid"]
    finally:
        await engine.dispose()


async def test_other_errors_are_sqlalchemys_and_keep_the_connection(
    database_url: str,
) -> None:
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0)
    try:
        first = await BACKEND_PID.first(engine)
        assert first is not None
        zero = bindparam("zero", type_=Job.duration.type)
        divide = OneRowStatement(select((1 / zero).label("x")))
        with pytest.raises(sa_exc.DBAPIError) as failure:
            await divide.first(engine, zero=0)
        assert not failure.value.connection_invalidated
        assert not is_database_unavailable(failure.value)
        assert await BACKEND_PID.first(engine) == first  # the same, healthy connection
    finally:
        await engine.dispose()
