"""Contract fuzzing: schemathesis generates requests from the service's own OpenAPI (every
operation, the webhook included) and checks that none gets a 5xx and that every response
matches what the schema documents (status codes, content types, headers, bodies).

It runs as schemathesis's CLI in a subprocess, against the service served over real HTTP
by this test's event loop (the pytest plugin is synchronous and would block that loop).
"""

import asyncio
import sys

from tests.harness import Stack, bearer

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(api: Stack) -> None:
    # an admin JWT is also an ordinary user's token: one run reaches every route
    admin = bearer(api.settings, "fuzzer", admin=True)["Authorization"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{api.url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "20261125",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        # live streams stay open by design (a queued job's until it ends; the all-jobs one
        # for ever): tests/integration/test_live.py covers them
        "--exclude-path-regex",
        "events$",
        "--header",
        f"Authorization: {admin}",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    assert "No issues found" in report or "passed" in report, report
    assert api.sim.calls["generate"] == 0  # background loops are off: nothing left the service
