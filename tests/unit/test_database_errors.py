"""Which database errors mean "unavailable, retry" (503) rather than a bug (500)."""

import pytest
from sqlalchemy import exc as sa_exc

from app.db.availability import is_database_unavailable


class DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def dbapi_error(sqlstate: str | None, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError(
        "SELECT 1", None, DriverError(sqlstate), connection_invalidated=invalidated
    )


@pytest.mark.parametrize(
    "sqlstate",
    ["08006", "08001", "57P01", "57P02", "57P03", "53300"],  # 57P03: "is starting up"
)
def test_a_server_that_cannot_serve_is_unavailable(sqlstate: str) -> None:
    assert is_database_unavailable(dbapi_error(sqlstate))


@pytest.mark.parametrize("sqlstate", ["23505", "42P01", "22P02", None])
def test_errors_of_our_own_are_not(sqlstate: str | None) -> None:
    assert not is_database_unavailable(dbapi_error(sqlstate))


def test_a_connection_that_died_under_a_statement_is_unavailable() -> None:
    assert is_database_unavailable(dbapi_error(None, invalidated=True))
    assert is_database_unavailable(ConnectionRefusedError())
