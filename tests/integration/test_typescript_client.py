"""The TypeScript client (clients/typescript) against the live service: its generated code
matches the service's document, it type-checks, its own tests pass under Node against the
service and the simulator over real HTTP, and in Chromium it follows a job through a
dropped connection without losing or repeating an event.
"""

import base64
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page
from sqlalchemy import select

from app.db.models import JobEvent
from testkit.harness import Stack, run_command, running_stack, wait_until
from testkit.tcp_proxy import TcpProxy
from tests import upload_files

CLIENT = Path(__file__).parents[2] / "clients" / "typescript"
BUNDLE = CLIENT / "dist" / "seedance-bff.browser.js"
NPM = shutil.which("npm") or "npm"


@pytest.fixture(scope="module")
async def stack(database_url: str) -> AsyncIterator[Stack]:
    """The service with its loops on, and a simulator slow enough (1 s per video) that a
    connection can be cut while a job is still moving."""
    async with running_stack(
        database_url,
        sim_config={"task_seconds": 1.0},
        dispatcher_enabled=True,
        reconciler_enabled=True,
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
async def built(stack: Stack) -> None:
    await run_command(NPM, "run", "build", cwd=CLIENT)


async def test_the_committed_client_is_generated_from_the_live_document(
    stack: Stack, tmp_path: Path
) -> None:
    """`make client` regenerates both files; CI fails when they were not committed."""
    live = (await stack.http.get("/openapi.json")).json()
    committed = json.loads((CLIENT / "openapi.json").read_text())
    assert live == committed, "the document changed: run `make client` and commit the result"
    # the package's own `generate` script, in a copy of the package fed the live document
    shutil.copy(CLIENT / "package.json", tmp_path)
    (tmp_path / "node_modules").symlink_to(CLIENT / "node_modules")
    (tmp_path / "openapi.json").write_text(json.dumps(live))
    await run_command(NPM, "run", "generate", cwd=tmp_path)
    generated = (tmp_path / "src" / "schema.ts").read_text()
    assert generated == (CLIENT / "src" / "schema.ts").read_text(), "run `make client`"


async def test_the_client_type_checks_strictly() -> None:
    await run_command(NPM, "exec", "--", "tsc", "--noEmit", cwd=CLIENT)


async def test_the_client_tests_pass_against_the_service(
    stack: Stack, built: None, tmp_path: Path
) -> None:
    token = stack.headers("ts-client")["Authorization"].removeprefix("Bearer ")
    photo = tmp_path / "photo.jpg"  # a phone's portrait photo, for the upload test
    photo.write_bytes(upload_files.phone_jpeg(600, 800))
    report = await run_command(
        "node",
        "--test",
        "dist/test/",
        cwd=CLIENT,
        env={
            "SEEDANCE_BFF_URL": stack.url,
            "SEEDANCE_BFF_TOKEN": token,
            "SEEDANCE_BFF_PHOTO": str(photo),
        },
    )
    assert "# fail 0" in report and "# pass 8" in report, report


async def client_page(context: BrowserContext, base: str, stack: Stack) -> tuple[Page, str]:
    """A page of the API's own origin (no CORS needed) with the client's browser bundle,
    and a user's token."""
    page = await context.new_page()
    await page.goto(f"{base}/healthz")
    await page.add_script_tag(path=str(BUNDLE))
    return page, stack.headers("browser-user")["Authorization"].removeprefix("Bearer ")


async def test_in_chromium_the_client_follows_a_job_through_a_dropped_connection(
    stack: Stack, built: None, browser: Browser
) -> None:
    proxy = TcpProxy("127.0.0.1", int(stack.url.rsplit(":", 1)[1]))
    await proxy.start()
    base = f"http://127.0.0.1:{proxy.port}"
    context = await browser.new_context()
    try:
        page, token = await client_page(context, base, stack)
        job_id = await page.evaluate(
            """async ([baseUrl, token]) => {
                const client = SeedanceBff.createSeedanceClient({
                    baseUrl, token, backoff: { initialMs: 50, maxMs: 200 },
                });
                const job = await client.createJob({ prompt: "a kite over a beach", duration: 5 });
                window.seen = [];
                window.reconnects = 0;
                window.following = (async () => {
                    const options = { onReconnect: () => { window.reconnects += 1; } };
                    for await (const event of client.followJob(job.id, options)) {
                        window.seen.push([event.event_id, event.to_status]);
                    }
                })();
                return job.id;
            }""",
            [base, token],
        )

        async def first_event() -> bool:
            return bool(await page.evaluate("window.seen.length"))

        await wait_until(first_event)
        await proxy.cut()  # every open connection dies, new ones are refused...
        await proxy.start()  # ...until the address answers again
        await page.evaluate("window.following")
        seen = await page.evaluate("window.seen")
        reconnects = await page.evaluate("window.reconnects")
    finally:
        await context.close()
        await proxy.cut()
    async with stack.app.state.services.sessionmaker() as session:
        recorded = list(
            await session.scalars(
                select(JobEvent.id).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            )
        )
    assert reconnects >= 1
    # from the move that was the latest when it connected on: none lost, none repeated
    first = recorded.index(seen[0][0])
    assert [event_id for event_id, _ in seen] == recorded[first:]
    assert seen[-1][1] == "succeeded"


async def test_in_chromium_the_client_uploads_with_progress_and_uses_the_upload(
    stack: Stack, built: None, browser: Browser
) -> None:
    """The browser path of `upload()`: XMLHttpRequest, whose progress events fetch lacks."""
    context = await browser.new_context()
    try:
        page, token = await client_page(context, stack.url, stack)
        photo = base64.b64encode(upload_files.phone_jpeg(600, 800)).decode()
        result = await page.evaluate(
            """async ([baseUrl, token, photo]) => {
                const client = SeedanceBff.createSeedanceClient({ baseUrl, token });
                const bytes = Uint8Array.from(atob(photo), (c) => c.charCodeAt(0));
                const file = new File([bytes], "IMG_0042.jpg", { type: "image/jpeg" });
                const progress = [];
                const upload = await client.upload(file, { onProgress: (p) => progress.push(p) });
                const job = await client.createJob({
                    prompt: "a kite over a beach", images: [upload], aspect_ratio: "3:4",
                });
                let refused = null;
                try {
                    await client.upload(new Blob(["<html>"], { type: "image/png" }));
                } catch (error) {
                    refused = [error.name, error.status, error.code, error.errors[0].field];
                }
                return { upload, job, progress, refused };
            }""",
            [stack.url, token, photo],
        )
    finally:
        await context.close()
    upload, job, progress = result["upload"], result["job"], result["progress"]
    assert (upload["kind"], upload["width"], upload["height"]) == ("image", 600, 800)
    assert job["images"] == [upload["reference"]]
    assert progress and progress[-1]["loaded"] == progress[-1]["total"] > 0
    assert result["refused"] == ["ProblemError", 422, "upload_invalid", "file"]
