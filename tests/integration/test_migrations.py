"""The Alembic revisions and the SQLAlchemy models describe the same schema, both ways."""

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrate import run_on_connection
from app.db.models import Base
from tests.integration.conftest import fresh_postgres_database

TABLES = {
    "jobs",
    "job_events",
    "batches",
    "outbound_endpoints",
    "outbound_events",
    "outbound_messages",
    "outbound_attempts",
    "api_keys",
    "job_stats_hours",
    "upstream_capacity",
}


def _diff(connection: Connection) -> list[object]:
    return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def _up_check_down(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_on_connection, "upgrade", "head")
            assert await conn.run_sync(_tables) == TABLES
            assert await conn.run_sync(_diff) == []
        async with engine.begin() as conn:
            await conn.run_sync(run_on_connection, "downgrade", "base")
            assert await conn.run_sync(_tables) == set()
        async with engine.begin() as conn:  # and up again: downgrade left nothing behind
            await conn.run_sync(run_on_connection, "upgrade", "head")
            assert await conn.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()


async def test_migrations_up_down_on_fresh_postgres() -> None:
    async with fresh_postgres_database("seedance_bff_migrations") as url:
        await _up_check_down(url)


async def test_migrations_up_down_on_sqlite(tmp_path: Path) -> None:
    await _up_check_down(f"sqlite+aiosqlite:///{tmp_path / 'bff.db'}")
