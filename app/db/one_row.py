"""Single statements on the hot paths (reading a job, applying a callback), run on the
asyncpg connection under a pooled SQLAlchemy connection, as their own transaction.

Why: SQLAlchemy's per-statement machinery (the ORM session, the execution context,
`BEGIN`/`ROLLBACK` around the statement) cost more than everything else these requests
do: a FastAPI endpoint reading a job through an ORM session served 36% of the requests of
the same endpoint on bare asyncpg, through this class 92% (bench/README.md). SQLAlchemy
still owns everything that matters: the SQL (compiled once from a Core statement), the
types' bind and result processing, the pool, and failures (raised as its `DBAPIError`s,
a dead connection invalidated). On other drivers (SQLite on a laptop) the statement runs
the usual way, in a transaction of its own.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import ReturnsRows

from app.db.availability import is_database_unavailable

# What asyncpg raises when the connection itself is gone (closed, reset, server gone).
_DRIVER_DISCONNECTS = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    parameters: list[tuple[str, Processor, Any]]  # name, processor, value if not given
    columns: list[tuple[str, Processor]]


class OneRowStatement:
    """A Core statement returning at most one row, compiled once per dialect; `first()`
    runs it and gives the row as a dict keyed by column, or None."""

    def __init__(self, statement: ReturnsRows) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            sql = self.statement.compile(dialect=dialect)
            compiled = self._compiled[dialect.name] = _Compiled(
                sql=sql.string,
                parameters=[
                    (
                        name,
                        sql.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                        sql.binds[name].value,
                    )
                    for name in sql.positiontup or ()
                ],
                columns=[
                    (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
                    for column in self.statement.exported_columns
                ],
            )
        return compiled

    async def first(self, engine: AsyncEngine, **params: Any) -> dict[str, Any] | None:
        if engine.dialect.driver != "asyncpg":
            async with engine.begin() as conn:
                row = (await conn.execute(self.statement, params)).mappings().first()
                return dict(row) if row is not None else None
        async with engine.connect() as conn:
            compiled = self._for(engine.dialect)
            args = []
            for name, process, default in compiled.parameters:
                value = params.get(name, default)
                args.append(process(value) if process else value)
            driver = (await conn.get_raw_connection()).driver_connection
            try:
                record = await driver.fetchrow(compiled.sql, *args)
            except Exception as exc:
                error = sa_exc.DBAPIError.instance(
                    compiled.sql,
                    args,
                    exc,
                    Exception,
                    connection_invalidated=isinstance(exc, _DRIVER_DISCONNECTS),
                )
                if is_database_unavailable(error):
                    await conn.invalidate(exc)
                raise error from exc
        if record is None:
            return None
        return {
            key: process(value) if process else value
            for (key, process), value in zip(compiled.columns, record.values(), strict=True)
        }
