"""The prompt playground, driven in headless Chromium (Debian's package, through
Playwright's `executable_path`; no browser is downloaded) against the service and the
simulator over real HTTP: sign in with a dev token, submit two variants, watch them finish
live over SSE, play both videos, promote one, and keep a screenshot as a test artifact."""

import base64
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select

from app.db.models import Upload
from testkit.harness import LIVE, Stack, running_stack
from testkit.moderation_fake import FakeModeration, fake_moderation
from tests import upload_files

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts"))


@pytest.fixture
async def stack(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Stack]:
    """The service and the simulator; a test may pass settings through indirect params."""
    settings = {**LIVE, **getattr(request, "param", {})}
    async with running_stack(database_url, sim_config={"task_seconds": 0.6}, **settings) as stack:
        yield stack


PageOpener = Callable[..., Awaitable[Page]]


@pytest.fixture
async def open_playground(browser: Browser, stack: Stack) -> AsyncIterator[PageOpener]:
    """Open the playground in a fresh browser context; every context is closed before the
    service stops (an open live stream would otherwise be cut by the shutdown)."""
    contexts: list[BrowserContext] = []

    async def open_page(**options: object) -> Page:
        context = await browser.new_context(**options)
        contexts.append(context)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        await page.goto(f"{stack.url}/playground")
        page.errors = errors  # type: ignore[attr-defined]
        return page

    yield open_page
    for context in contexts:
        await context.close()


async def sign_in(page: Page) -> None:
    await page.get_by_role("button", name="Get a dev token").click()
    await expect(page.get_by_role("status")).to_contain_text("Signed in as playground-user")
    await expect(page.locator("#live")).to_have_text("Live updates on.")


async def test_two_variants_finish_live_play_and_one_is_promoted(
    open_playground: PageOpener, stack: Stack
) -> None:
    page = await open_playground()
    await sign_in(page)
    await page.get_by_label("Prompt variants").fill(
        "a paper boat on a rainy street, golden hour\na paper boat on a rainy street, neon night"
    )
    await page.get_by_label("Duration").select_option("5")
    await page.get_by_label("Resolution", exact=True).select_option("480p")
    await page.get_by_role("button", name="Generate").click()

    cards = page.locator("#results > li")
    await expect(cards).to_have_count(2)
    # both reach succeeded through callbacks, pushed to the page over SSE (no polling)
    await expect(page.locator('#results > li[data-status="succeeded"]')).to_have_count(
        2, timeout=20_000
    )
    videos = page.locator("#results video")
    await expect(videos).to_have_count(2)
    for index in range(2):  # the browser really loaded each video's MP4
        await videos.nth(index).evaluate(
            "v => v.readyState >= 1 || new Promise((ok, fail) => {"
            " v.onloadedmetadata = ok; v.onerror = () => fail(new Error('video error')); })"
        )

    # Seedance's URLs expire; the cards play from our storage, poster first
    stack.sim.config.result_url_ttl_seconds = 0
    for index in range(2):
        await expect(videos.nth(index)).to_have_attribute("poster", re.compile(r"/media/posters/"))
        await videos.nth(index).evaluate(
            "v => new Promise((ok, fail) => { v.onloadeddata = ok;"
            " v.onerror = () => fail(new Error('video error')); v.load(); })"
        )
    stack.sim.config.result_url_ttl_seconds = 86400  # the next render's URL works again

    first = cards.nth(0)
    await first.get_by_label("Duration").select_option("10")
    await first.get_by_role("button", name="Promote").click()
    promoted = page.locator('#results > li[data-model="seedance-2.0"]')
    await expect(promoted).to_have_count(1)
    await expect(promoted).to_have_attribute("data-status", "succeeded", timeout=20_000)
    await expect(promoted.locator(".details")).to_contain_text("seedance-2.0 · 10s")

    # a deleted job disappears, and stays gone
    second = cards.nth(1)
    deleted_id = await second.get_attribute("data-job-id")
    await second.get_by_role("button", name="Delete").click()
    await expect(page.locator(f'#results > li[data-job-id="{deleted_id}"]')).to_have_count(0)
    await expect(cards).to_have_count(2)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "playground.png", full_page=True)
    assert (ARTIFACTS / "playground.png").stat().st_size > 10_000
    assert page.errors == []  # type: ignore[attr-defined]

    jobs = await stack.jobs()
    assert sorted(j.model for j in jobs) == ["seedance-2-mini", "seedance-2-mini", "seedance-2.0"]
    assert [str(j.id) for j in jobs if j.deleted_at is not None] == [deleted_id]
    (render,) = [j for j in jobs if j.model == "seedance-2.0"]
    assert render.source_job_id in {j.id for j in jobs} and render.duration == 10
    assert stack.sim.calls["generate"] == 3


async def test_images_picked_and_dropped_animate_in_two_variants(
    open_playground: PageOpener, stack: Stack, tmp_path: Path
) -> None:
    page = await open_playground()
    await sign_in(page)
    photo = tmp_path / "IMG_0042.jpg"  # a portrait stored sideways, EXIF orientation 6
    photo.write_bytes(upload_files.phone_jpeg(600, 800))
    await page.get_by_label("Add images").set_input_files(photo)
    thumbs = page.locator("#image-list img")
    await expect(thumbs).to_have_count(1)
    await expect(thumbs.nth(0)).to_have_attribute("alt", "Image 1 (600x800)")  # upright
    await expect(page.get_by_label("Upload progress")).to_have_js_property("value", 100)
    # a second image dropped onto the picker
    dropped = await page.evaluate_handle(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            return transfer;
        }""",
        base64.b64encode(upload_files.png(640, 480)).decode(),
    )
    await page.dispatch_event("#image-drop", "drop", {"dataTransfer": dropped})
    await expect(thumbs).to_have_count(2)
    for index in range(2):  # the browser shows the stored, sanitized copies
        assert await thumbs.nth(index).evaluate("img => img.decode().then(() => img.naturalWidth)")

    await page.get_by_label("Prompt variants").fill("the photo comes alive\nthe photo, at night")
    await page.get_by_label("Aspect ratio").select_option("3:4")
    await page.get_by_role("button", name="Generate").click()
    await expect(page.locator('#results > li[data-status="succeeded"]')).to_have_count(
        2, timeout=20_000
    )
    async with stack.app.state.services.sessionmaker() as session:
        stored = list(await session.scalars(select(Upload).order_by(Upload.created_at)))
    assert [(u.width, u.height) for u in stored] == [(600, 800), (640, 480)]
    assert len(stack.sim.tasks) == 2
    for task in stack.sim.tasks.values():  # Seedance fetched both clean copies
        assert [seen.sha256 for seen in task.inputs] == [u.sha256 for u in stored]
    assert page.errors == []  # type: ignore[attr-defined]


async def test_problems_are_shown_from_the_problem_bodies(
    open_playground: PageOpener, stack: Stack
) -> None:
    page = await open_playground()
    await sign_in(page)
    too_long = "x" * 2001
    await page.get_by_label("Prompt variants").fill(f"a fine prompt\n{too_long}")
    await page.get_by_role("button", name="Generate").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("validation_failed")
    await expect(alert.locator('li[data-code="prompt_too_long"]')).to_contain_text("Variant 2")
    await expect(page.get_by_label("Prompt variants")).to_have_attribute("aria-invalid", "true")
    await expect(alert).to_be_focused()  # keyboard and screen-reader users land on it
    assert stack.sim.calls["generate"] == 0 and await stack.jobs() == []


LEDGER_ADMIN = "playground-admin-token-" + "p" * 24


@pytest.mark.parametrize(
    "stack", [{"credits_ledger": True, "admin_token": LEDGER_ADMIN}], indirect=True
)
async def test_the_balance_and_each_cards_cost_follow_the_ledger_live(
    open_playground: PageOpener, stack: Stack
) -> None:
    page = await open_playground()
    await sign_in(page)
    granted = await stack.http.post(
        "/admin/users/playground-user/credits",
        json={"amount": 50, "reason": "welcome"},
        headers={"Authorization": f"Bearer {LEDGER_ADMIN}"},
    )
    assert granted.status_code == 201
    balance = page.locator("#balance")
    await expect(balance).to_have_text("Credits: 50 available.")  # told live, no reload
    await page.get_by_label("Prompt variants").fill("a paper boat, dawn")
    await page.get_by_label("Duration").select_option("4")
    await page.get_by_label("Resolution", exact=True).select_option("480p")
    await page.get_by_role("button", name="Generate").click()
    card = page.locator("#results > li")
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=20_000)
    await expect(card.locator(".details")).to_contain_text("4 credits charged")
    await expect(balance).to_have_text("Credits: 46 available.")
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "stack", [{"user_daily_credit_budget": 10, "rate_limit_create": "2/minute"}], indirect=True
)
async def test_budget_and_rate_limit_refusals_are_explained(
    open_playground: PageOpener, stack: Stack
) -> None:
    page = await open_playground()
    await sign_in(page)
    alert = page.get_by_role("alert")
    prompts = page.get_by_label("Prompt variants")
    # two 8 s 720p variants cost 2 x 16 credits: over the daily budget of 10
    await prompts.fill("a paper boat, golden hour\na paper boat, neon night")
    await page.get_by_role("button", name="Generate").click()
    await expect(alert).to_contain_text("budget_exceeded")
    await expect(alert).to_contain_text("The budget resets at")
    # one 4 s 480p job (4 credits) fits; the next create passes the limit of 2 a minute
    await prompts.fill("a paper boat, dawn")
    await page.get_by_label("Duration").select_option("4")
    await page.get_by_label("Resolution", exact=True).select_option("480p")
    await page.get_by_role("button", name="Generate").click()
    await expect(page.locator("#results > li")).to_have_count(1)
    await expect(alert).to_be_hidden()
    await page.get_by_role("button", name="Generate").click()
    await expect(alert).to_contain_text("rate_limited")
    await expect(alert).to_contain_text("You can try again in")
    assert len(await stack.jobs()) == 1


async def test_readable_on_a_phone_and_every_control_is_labelled(
    open_playground: PageOpener, stack: Stack
) -> None:
    page = await open_playground(viewport={"width": 390, "height": 844})
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    unlabelled = await page.evaluate(
        "[...document.querySelectorAll('input, select, textarea')]"
        ".filter(el => el.labels.length === 0).map(el => el.id || el.name)"
    )
    assert unlabelled == []
    # keyboard only: Tab reaches the token field and the dev-token button, Enter presses it
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "token"
    for _ in range(2):
        await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "dev-token"
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("Signed in")
    response = await page.request.get(f"{stack.url}/playground/")
    assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_production_has_no_dev_tokens_and_no_playground_by_default(
    database_url: str,
) -> None:
    production = {
        "environment": "production",
        "jwt_secret": "p" * 40,
        "callback_secret": "w" * 40,
        "media_url_secret": "m" * 40,
        "outbound_secrets_key": "o" * 40,
    }
    async with running_stack(database_url, **production) as stack:
        assert (await stack.http.get("/playground/")).status_code == 404
        assert (await stack.http.post("/dev/token")).status_code == 404
    async with running_stack(database_url, playground_enabled=True, **production) as stack:
        assert (await stack.http.get("/playground/")).status_code == 200
        assert (await stack.http.post("/dev/token")).status_code == 404  # paste a real token


REVIEW_ADMIN_TOKEN = "review-page-admin-token-" + "r" * 24


async def test_a_held_video_plays_for_the_reviewer_and_turns_playing_on_the_owners_card(
    browser: Browser, database_url: str
) -> None:
    """The review page in Chromium: a result the output stage held plays for the moderator,
    who releases it; the owner's playground card goes from "in review" to playing, live."""
    fake = FakeModeration(every_image={"violence": 0.8})
    async with (
        fake_moderation(fake) as moderation_url,
        running_stack(
            database_url,
            sim_config={"task_seconds": 0.6},
            **LIVE,
            admin_token=REVIEW_ADMIN_TOKEN,
            moderation_provider="openai",
            moderation_openai_base_url=f"{moderation_url}/v1",
            moderation_openai_api_key="sk-test",
            moderation_output=True,
        ) as stack,
    ):
        owner_context, reviewer_context = await browser.new_context(), await browser.new_context()
        try:
            owner = await owner_context.new_page()
            await owner.goto(f"{stack.url}/playground")
            await sign_in(owner)
            await owner.get_by_label("Prompt variants").fill("a lighthouse in a storm")
            await owner.get_by_role("button", name="Generate").click()
            card = owner.locator("#results > li")
            await expect(card).to_have_attribute("data-status", "succeeded", timeout=20_000)
            await expect(card.locator(".moderation")).to_contain_text("In review")
            await expect(card.locator("video")).to_have_count(0)

            reviewer = await reviewer_context.new_page()
            errors: list[str] = []
            reviewer.on("pageerror", lambda exc: errors.append(str(exc)))
            await reviewer.goto(f"{stack.url}/review/")
            await reviewer.get_by_label("Admin token").fill(REVIEW_ADMIN_TOKEN)
            await reviewer.get_by_role("button", name="Load the queue").click()
            await expect(reviewer.get_by_role("status")).to_have_text("1 open case(s).")
            await reviewer.locator("#queue button.open").click()
            video = reviewer.get_by_label("The video under review")
            await video.evaluate(
                "v => v.readyState >= 2 || new Promise((ok, fail) => {"
                " v.onloadeddata = ok; v.onerror = () => fail(new Error('video error')); })"
            )
            await reviewer.get_by_role("button", name="Release").click()
            await expect(reviewer.get_by_role("status")).to_contain_text("it is now clear")

            await expect(card.locator(".moderation")).to_be_hidden()
            await card.locator("video").evaluate(
                "v => v.readyState >= 1 || new Promise((ok, fail) => {"
                " v.onloadedmetadata = ok; v.onerror = () => fail(new Error('video error')); })"
            )
            assert errors == []
        finally:
            await owner_context.close()
            await reviewer_context.close()
