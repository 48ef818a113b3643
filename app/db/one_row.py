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
from typing import Any, cast

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import Executable, ReturnsRows

from app.db.availability import is_database_unavailable

# What asyncpg raises when the connection itself is gone (closed, reset, server gone).
_DRIVER_DISCONNECTS = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)

Processor = Callable[[Any], Any] | None
Columns = list[tuple[str, Processor]]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    parameters: list[tuple[str, Processor, Any]]  # name, processor, value if not given


class OneRowStatement:
    """A Core statement returning at most one row; `first()` runs it and gives the row as
    a dict keyed by column, or None. On asyncpg it is compiled once, and its result
    processors are made on the first run: some (numerics) need the column types the
    server reports."""

    def __init__(self, statement: ReturnsRows) -> None:
        self.statement = statement
        self._compiled: _Compiled | None = None
        self._columns: Columns | None = None

    def _compile(self, dialect: Dialect) -> _Compiled:
        if self._compiled is None:
            sql = self.statement.compile(dialect=dialect)
            self._compiled = _Compiled(
                sql=sql.string,
                parameters=[
                    (
                        name,
                        sql.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                        sql.binds[name].value,
                    )
                    for name in sql.positiontup or ()
                ],
            )
        return self._compiled

    async def _fetch(
        self, driver: asyncpg.Connection, dialect: Dialect, sql: str, args: list[Any]
    ) -> tuple[Columns, asyncpg.Record | None]:
        if self._columns is not None:
            return self._columns, await driver.fetchrow(sql, *args)
        prepared = await driver.prepare(sql)
        self._columns = [
            (
                column.key,
                column.type.dialect_impl(dialect).result_processor(dialect, attribute.type.oid),
            )
            for column, attribute in zip(
                self.statement.exported_columns, prepared.get_attributes(), strict=True
            )
        ]
        return self._columns, await prepared.fetchrow(*args)

    async def first(self, engine: AsyncEngine, **params: Any) -> dict[str, Any] | None:
        if engine.dialect.driver != "asyncpg":
            async with engine.begin() as conn:
                # every ReturnsRows built here (select, insert/update ... returning) is executable
                statement = cast(Executable, self.statement)
                row = (await conn.execute(statement, params)).mappings().first()
                return dict(row) if row is not None else None
        compiled = self._compile(engine.dialect)
        args = []
        for name, process, default in compiled.parameters:
            value = params.get(name, default)
            args.append(process(value) if process else value)
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            try:
                columns, record = await self._fetch(driver, engine.dialect, compiled.sql, args)
            except Exception as exc:
                error = sa_exc.DBAPIError.instance(
                    compiled.sql,
                    args,
                    exc,
                    Exception,
                    # as SQLAlchemy decides it: a closed connection after the error (a
                    # server that ended the session can surface as an InternalClientError)
                    connection_invalidated=driver is None
                    or driver.is_closed()
                    or isinstance(exc, _DRIVER_DISCONNECTS),
                )
                if is_database_unavailable(error):
                    await conn.invalidate(exc)
                raise error from exc
        if record is None:
            return None
        return {
            key: process(value) if process else value
            for (key, process), value in zip(columns, record.values(), strict=True)
        }
