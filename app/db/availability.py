"""What the database's failures mean: "unavailable, retry soon" (a 503 for clients, a
retry for background work) as opposed to a bug."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

logger = logging.getLogger(__name__)

# What a database that is down, restarting or unreachable raises (asyncpg's refused
# connects surface as ConnectionError, unwrapped).
_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    ConnectionError,
)


# SQLSTATEs of a server that cannot serve right now: connection exceptions (class 08),
# shutting down, crashed or still starting up (57P01-57P03), out of connections (53300).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def is_database_unavailable(exc: BaseException) -> bool:
    """The database is down, restarting, or a connection died under a statement. asyncpg
    reports these as plain DBAPIErrors: SQLAlchemy marks a dead connection
    `connection_invalidated`; a server that refuses sessions says so in its SQLSTATE."""
    if isinstance(exc, sa_exc.DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if exc.connection_invalidated or sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
    return isinstance(exc, _UNAVAILABLE)


# Every exception class a database failure can surface as (for exception handlers).
DATABASE_ERRORS = (sa_exc.DBAPIError, *_UNAVAILABLE)


async def write_through_outage(write: Callable[[], Awaitable[None]], give_up_after: float) -> None:
    """Run `write`, waiting out a database outage (exponential backoff with jitter) for up
    to `give_up_after` seconds: for background work whose outcome exists only in this
    process until it is written. Any other error, or the outage outlasting that, raises."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_database_unavailable),
        # at most a second between tries: the write lands soon after the database is back
        wait=wait_exponential_jitter(multiplier=0.1, max=1),
        stop=stop_after_delay(give_up_after),
        reraise=True,
    ):
        with attempt:
            await write()


@asynccontextmanager
async def undone_if_cut(
    undo: Callable[[], Awaitable[None]], give_up_after: float
) -> AsyncIterator[None]:
    """Around a claim's transaction: when a database outage cuts it, its COMMIT may have
    landed while the work it claimed will never start here. `undo` (which must be a no-op
    for a claim that did not land) then runs once the database answers, so the work is
    not held for the claim's lease by a blink of our own database."""
    try:
        yield
    except Exception as exc:
        if is_database_unavailable(exc):
            try:
                await write_through_outage(undo, give_up_after)
            except Exception:
                logger.exception("a claim cut by the database could not be undone")
        raise
