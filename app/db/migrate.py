"""Run the Alembic migrations from code (dev run, tests) with the project's alembic.ini."""

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

# A source checkout has alembic.ini at its root; an installed image says where with
# ALEMBIC_CONFIG (the variable the alembic CLI reads too).
ALEMBIC_INI = os.environ.get(
    "ALEMBIC_CONFIG", str(Path(__file__).resolve().parents[2] / "alembic.ini")
)


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(ALEMBIC_INI)
    config.attributes["configure_logger"] = False
    if database_url is not None:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate a database by URL; call it outside any running event loop."""
    command.upgrade(alembic_config(database_url), revision)


def run_on_connection(connection: Connection, action: str, revision: str) -> None:
    """`upgrade`/`downgrade` on an open connection (from `AsyncConnection.run_sync`)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)


def head_revision() -> str | None:
    """The revision a fully migrated database is at."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
