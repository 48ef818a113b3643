"""Run the Alembic migrations from code (dev run, tests) with the project's alembic.ini."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
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
