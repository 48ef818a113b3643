"""Integration fixtures: a private Postgres database for the run, emptied before each test."""

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.migrate import run_on_connection
from app.db.models import CreditAccount
from testkit.databases import fresh_postgres_database
from testkit.harness import Stack, running_stack
from testkit.s3_server import S3Bucket, new_bucket, s3_server

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# as root, in a sandboxed machine with no network but loopback
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A migrated Postgres database for the whole run."""
    async with fresh_postgres_database("seedance_bff_test") as url:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(run_on_connection, "upgrade", "head")
        await engine.dispose()
        yield url


@pytest.fixture(scope="session")
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def clean_tables(db_engine: AsyncEngine) -> None:
    async with db_engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE jobs, job_events, batches, outbound_endpoints, outbound_events, "
                "outbound_messages, outbound_attempts, api_keys, job_stats_hours, "
                "upstream_capacity, uploads, job_uploads, moderation_events, moderation_cases, "
                "moderation_reports, suspensions, taken_down_files, credit_transfers "
                "RESTART IDENTITY CASCADE"
            )
        )
        # the service's own accounts stay (the migration made them), at zero
        await conn.execute(text("DELETE FROM credit_accounts WHERE kind = 'user'"))
        await conn.execute(
            update(CreditAccount).values(credits_posted=0, debits_posted=0, debits_pending=0)
        )


@pytest.fixture(scope="module")
async def api(database_url: str) -> AsyncIterator[Stack]:
    """The service (background loops off) and the simulator, shared by a module's tests."""
    async with running_stack(database_url) as stack:
        yield stack


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> S3Bucket:
    """An empty bucket of its own for each test."""
    return new_bucket(s3_endpoint)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium, Debian's package (through Playwright's `executable_path`; no
    browser is downloaded)."""
    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: apt-get install chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()
