"""Fresh Postgres databases for a test run or a benchmark, and rows as the service writes
them."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from testkit.harness import wait_until

T = TypeVar("T")

# The server's maintenance database; each run creates (and drops) databases of its own.
POSTGRES_ADMIN_URL = os.environ.get(
    # the password is that of the compose file's Postgres; trust auth (CI) ignores it
    "TEST_POSTGRES_ADMIN_URL",
    "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/postgres",
)


@asynccontextmanager
async def fresh_postgres_database(prefix: str) -> AsyncIterator[str]:
    """Create an empty database and yield its URL; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    # no pool: a connection kept from CREATE would be dead at DROP if the server restarted
    admin = create_async_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def racing(engine: AsyncEngine, act: Callable[[AsyncSession], Awaitable[T]]) -> tuple[T, T]:
    """`act` in two transactions at once: the first's writes are sent, not committed, while
    the second runs until it waits for a lock the first holds; then the first commits.
    What each returned (a race a test can repeat, whatever the machine's speed)."""
    async with AsyncSession(engine) as first, AsyncSession(engine) as second:
        await first.begin()
        first_result = await act(first)
        await first.flush()

        async def act_second() -> T:
            async with second.begin():
                return await act(second)

        second_result = asyncio.create_task(act_second())
        await wait_until(lambda: _someone_waits_for_a_lock(engine))
        await first.commit()
        return first_result, await second_result


async def _someone_waits_for_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def job_row(
    index: int, owner: str, status: str, created_at: datetime, task_id: str | None = None
) -> dict[str, Any]:
    """A `jobs` row as the service would have written it (an 8 s Mini job at 720p)."""
    return {
        "id": uuid.uuid4(),
        "owner": owner,
        "model": "seedance-2-mini",
        "prompt": f"seeded variant {index}",
        "duration": 8,
        "resolution": "720p",
        "aspect_ratio": "16:9",
        "estimated_cost": 16,
        "status": status,
        "upstream_task_id": task_id,
        "created_at": created_at,
        "updated_at": created_at,
        "submitted_at": created_at if task_id else None,
    }
