"""Contract fuzzing: schemathesis generates requests from the service's own OpenAPI (every
operation, the webhook included) and runs all of its checks: no 5xx; responses as
documented (status codes, content types, headers, bodies); schema-invalid requests refused;
schema-valid ones accepted (but for the rules no schema can state, see contract_checks.py);
undeclared methods answered 405 with an exact `Allow`; authentication not ignored.

It runs as schemathesis's CLI in a subprocess, against the service served over real HTTP
by this test's event loop (the pytest plugin is synchronous and would block that loop),
once with an ordinary user's credentials over the clients' operations, and once with an
admin's over the admin operations (that a user gets 403 from every admin route is
test_access_control.py's; fuzzing both with both doubled the run for nothing).
"""

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from testkit.harness import Stack, bearer, run_command, running_stack

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
async def working(database_url: str) -> AsyncIterator[Stack]:
    """The service with its loops on: the jobs the fuzzer creates finish (on the simulator),
    so their live streams end and their `succeeded` bodies are checked too."""
    async with running_stack(
        database_url, dispatcher_enabled=True, reconciler_enabled=True
    ) as stack:
        yield stack


@pytest.mark.parametrize("admin", [False, True], ids=["user", "admin"])
async def test_schemathesis_finds_no_failure_with_all_checks(working: Stack, admin: bool) -> None:
    api = working
    token = bearer(api.settings, "fuzzer", admin=admin)["Authorization"]
    report = await run_command(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{api.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "15",
        "--seed",
        "20261125",
        # one worker: with two threads, CPython 3.11 can fail compiling code concurrently
        # ("SystemError: AST constructor recursion depth mismatch", CPython issue 106905)
        "--workers",
        "1",
        "--request-timeout",
        "10",
        # the all-jobs stream stays open for ever by design: tests/integration/test_live.py
        # covers it (a job's own stream ends: its job is unknown here, or terminal)
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--exclude-path",
        "/events",
        "--include-path-regex" if admin else "--exclude-path-regex",
        "^/admin/",
        # a revoked API key's record stays readable (revoked_at set) for audit, so reading
        # it after its DELETE is no use after free (a job's DELETE is, in the user run)
        *(["--exclude-checks", "use_after_free"] if admin else []),
        "--header",
        f"Authorization: {token}",
        "--no-color",
        env={"SCHEMATHESIS_HOOKS": "tests.integration.contract_checks"},
    )
    assert "No issues found" in report or "passed" in report, report
