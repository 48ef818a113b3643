"""The Alembic revisions and the SQLAlchemy models describe the same schema, both ways."""

import asyncio
import os
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrate import head_revision, run_on_connection
from app.db.models import Base
from testkit.databases import fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]
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
    "uploads",
    "job_uploads",
    "moderation_events",
    "moderation_cases",
    "moderation_reports",
    "suspensions",
    "taken_down_files",
    "credit_accounts",
    "credit_transfers",
    "erasure_marks",
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


async def test_four_migrations_started_at_once_all_succeed_and_reach_head() -> None:
    """What replicas (or a migration Job and an operator) starting together do: each
    `alembic upgrade head` waits for the migration lock, the later ones find nothing to do."""
    async with fresh_postgres_database("seedance_bff_migration_race") as url:
        environment = {**os.environ, "DATABASE_URL": url}
        processes = [
            await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "alembic", "upgrade", "head"),
                cwd=ROOT,
                env=environment,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for _ in range(4)
        ]
        outputs = await asyncio.gather(*(process.communicate() for process in processes))
        assert [p.returncode for p in processes] == [0] * 4, [out for out, _ in outputs]
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                at = await conn.scalar(text("SELECT version_num FROM alembic_version"))
                assert at == head_revision()
                assert await conn.run_sync(_tables) == TABLES
        finally:
            await engine.dispose()
