"""The one async engine of a process, and its sessionmaker."""

from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Base

Row = TypeVar("Row", bound=Base)


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(settings.database_url, connect_args={"timeout": 30})
        _use_wal(engine)
        return engine
    # No pre-ping (a round trip on every checkout): a connection that died with a database
    # restart fails its statement once, SQLAlchemy then invalidates the whole pool, that
    # request is a 503 (app/kit/errors.py) and the next ones get fresh connections.
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_recycle=1800,
    )


def _use_wal(engine: AsyncEngine) -> None:
    """SQLite: readers do not block the dispatcher's writes, and foreign keys are enforced."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions of a Session class of this app's own, so session event hooks (the
    in-process event fan-out on SQLite) attach to this app only."""
    app_session = type("AppSession", (Session,), {})
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=app_session)


def upsert_insert(session: AsyncSession | Session, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` with the ON CONFLICT clauses of the session's database
    (Postgres in production, SQLite in the dev run)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def lock_or_insert(
    session: AsyncSession, model: type[Row], key: Any, **values: Any
) -> tuple[Row | None, bool]:
    """The row of `model` whose primary key is `key`, locked until the transaction ends,
    inserted with `values` first when absent (then True). Inserting first gives the lock a
    row to take: read first, an absent row locks nothing, and two transactions that each
    found none would each insert it. None when another deleted it between the statements."""
    (column,) = model.__table__.primary_key.columns
    inserted = await session.execute(
        upsert_insert(session, model)
        .values({column.name: key, **values})
        .on_conflict_do_nothing()
        .returning(column)
    )
    created = inserted.first() is not None
    row = await session.get(model, key, with_for_update=True, populate_existing=True)
    return row, created
