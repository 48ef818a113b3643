"""Credits around the ledger (issue 35): Stripe top-ups, a plan's monthly credits and
their expiry, the `credits` live event, metering and account events to the product's
servers, and the Seedance account's forecast. Postgres, the simulator and a webhook
receiver over real HTTP."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.credits.monthly import period_bounds, period_of
from app.db.models import CreditAccount, CreditTransfer
from testkit.harness import Stack, running_stack, wait_until
from testkit.stripe_events import STRIPE_SECRET, send_stripe, stripe_event, stripe_signature
from testkit.webhook_receiver import Receiver, receiving
from tests.integration.test_credits import (
    ADMIN,
    ADMIN_TOKEN,
    COST,
    _status,
    grant,
    ledger_is_whole,
    paused_reason,
)


async def available(stack: Stack, subject: str = "alice") -> int:
    credits = (await stack.http.get("/me/credits", headers=stack.headers(subject))).json()
    return int(credits["available"])


async def test_a_paid_checkout_tops_up_once_and_a_bad_signature_moves_nothing(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(
        database_url,
        credits_ledger=True,
        admin_token=ADMIN_TOKEN,
        stripe_webhook_secret=STRIPE_SECRET,
    ) as stack:
        paid = stripe_event("cs_test_1", {"subject": "alice", "credits": "250"})
        first = await send_stripe(stack, paid)
        assert first.status_code == 200, first.text
        assert first.json()["transfer"]["kind"] == "topup"
        assert first.json()["transfer"]["amount"] == 250
        replay = await send_stripe(stack, paid)  # Stripe retries: the same event again
        assert replay.json()["transfer"]["id"] == first.json()["transfer"]["id"]
        # the same session's later event (a delayed payment method) moves nothing either
        later = stripe_event(
            "cs_test_1",
            {"subject": "alice", "credits": "250"},
            event_type="checkout.session.async_payment_succeeded",
        )
        assert (await send_stripe(stack, later)).json()["transfer"]["id"] == (
            first.json()["transfer"]["id"]
        )
        assert await available(stack) == 250

        other = stripe_event("cs_test_2", {"subject": "alice", "credits": "5"})
        forged = await send_stripe(stack, other, stripe_signature(other, "whsec_" + "x" * 32))
        assert (forged.status_code, forged.json()["code"]) == (400, "invalid_signature")
        stale = stripe_signature(other, at=int(time.time()) - 3600)
        old = await send_stripe(stack, other, stale)
        assert (old.status_code, old.json()["code"]) == (400, "invalid_signature")
        unsigned = await stack.http.post("/billing/stripe/webhook", content=other)
        assert (unsigned.status_code, unsigned.json()["code"]) == (400, "invalid_signature")
        assert await available(stack) == 250

        unpaid = stripe_event(
            "cs_test_3", {"subject": "alice", "credits": "9"}, payment_status="unpaid"
        )
        ignored = await send_stripe(stack, unpaid)
        assert (ignored.status_code, ignored.json()["transfer"]) == (200, None)
        for metadata, field in (
            ({"credits": "9"}, "data.object.metadata.subject"),
            ({"subject": "alice", "credits": "-9"}, "data.object.metadata.credits"),
            ({"subject": "alice", "credits": "1.5"}, "data.object.metadata.credits"),
        ):
            bad = await send_stripe(stack, stripe_event("cs_test_4", metadata))
            assert (bad.status_code, bad.json()["errors"][0]["field"]) == (422, field)
        assert await available(stack) == 250
        await ledger_is_whole(db_engine)


async def test_stripe_top_ups_are_not_found_without_a_secret(database_url: str) -> None:
    async with running_stack(database_url, credits_ledger=True) as stack:
        payload = stripe_event("cs_test_1", {"subject": "alice", "credits": "250"})
        response = await send_stripe(stack, payload)
        assert response.status_code == 404


PLANS = {"pro": {"monthly_credits": 100}}
MONTHLY: dict[str, Any] = {
    "credits_ledger": True,
    "admin_token": ADMIN_TOKEN,
    "plans": PLANS,
    "default_plan": "pro",
}


async def _backdate_a_month(db_engine: AsyncEngine, subject: str) -> str:
    """Move `subject`'s monthly grant (its key too) and holds into last month, as if a
    month had passed."""
    now = datetime.now(UTC)
    last = period_of(period_bounds(period_of(now))[0] - timedelta(days=1))
    start, _ = period_bounds(last)
    async with AsyncSession(db_engine) as session, session.begin():
        account = await session.scalar(
            select(CreditAccount).where(CreditAccount.subject == subject)
        )
        assert account is not None
        account.period = last
        await session.execute(
            update(CreditTransfer)
            .where(CreditTransfer.user_account == account.id)
            .values(created_at=start + timedelta(days=2))
        )
        await session.execute(
            update(CreditTransfer)
            .where(CreditTransfer.idempotency_key == f"monthly:{account.id}:{period_of(now)}")
            .values(idempotency_key=f"monthly:{account.id}:{last}")
        )
    return last


async def test_monthly_credits_are_spent_first_and_what_is_left_expires(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(database_url, dispatcher_enabled=True, **MONTHLY) as stack:
        credits = (await stack.http.get("/me/credits", headers=stack.headers())).json()
        month_end = period_bounds(period_of(datetime.now(UTC)))[1]
        assert credits["available"] == 100
        assert [(e["amount"], datetime.fromisoformat(e["at"])) for e in credits["expiring"]] == [
            (100, month_end)
        ]
        await grant(stack, "alice", 40, key="bought")  # lasting credits
        job = await stack.create_job()  # its cost comes out of the monthly credits first
        await wait_until(lambda: _status(stack, job["id"], "succeeded"))
        credits = (await stack.http.get("/me/credits", headers=stack.headers())).json()
        assert credits["available"] == 140 - COST
        assert [e["amount"] for e in credits["expiring"]] == [100 - COST]

        last = await _backdate_a_month(db_engine, "alice")
        # a new month: what was left of last month's grant expires, this month's is granted
        # (concurrent first reads settle it once)
        reads = await asyncio.gather(
            *(stack.http.get("/me/credits", headers=stack.headers()) for _ in range(5))
        )
        assert {r.json()["available"] for r in reads} == {40 + 100}
        statement = (
            await stack.http.get("/me/credits/transactions", headers=stack.headers())
        ).json()["items"]
        expired = [t for t in statement if t["kind"] == "expire"]
        assert [(t["amount"], t["available_change"]) for t in expired] == [
            (100 - COST, -(100 - COST))
        ]
        assert last in expired[0]["note"]
        assert sum(1 for t in statement if t["kind"] == "grant") == 3  # 2 monthly, 1 bought
        await ledger_is_whole(db_engine)


async def test_a_new_month_is_settled_by_the_first_create(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(database_url, **MONTHLY) as stack:
        first = await stack.create_job()  # the first use of the month grants it
        assert first["cost"]["held"] == COST
        await _backdate_a_month(db_engine, "alice")
        # last month: 100 granted, COST held by a job still waiting (spent, so it stays)
        await stack.create_job()
        credits = (await stack.http.get("/me/credits", headers=stack.headers())).json()
        assert credits["held"] == 2 * COST
        assert credits["available"] == 100 - COST  # this month's grant, less the new hold
        statement = (
            await stack.http.get("/me/credits/transactions", headers=stack.headers())
        ).json()["items"]
        assert [t["amount"] for t in statement if t["kind"] == "expire"] == [100 - COST]
        await ledger_is_whole(db_engine)


async def credit_events(stack: Stack, into: list[dict[str, Any]], ready: asyncio.Event) -> None:
    """Collect the `credits` events of alice's stream (read until cancelled)."""
    async with stack.http.stream("GET", "/events", headers=stack.headers(), timeout=60) as answer:
        kind, data = "", ""
        async for line in answer.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "":
                if kind == "ready":
                    ready.set()
                elif kind == "credits":
                    into.append(json.loads(data))
                kind, data = "", ""


@contextlib.asynccontextmanager
async def following_credits(stack: Stack) -> AsyncIterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    ready = asyncio.Event()
    reader = asyncio.create_task(credit_events(stack, events, ready))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        yield events
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def test_the_live_stream_says_each_change_of_the_balance(database_url: str) -> None:
    async with (
        running_stack(
            database_url, credits_ledger=True, admin_token=ADMIN_TOKEN, dispatcher_enabled=True
        ) as stack,
        following_credits(stack) as events,
    ):
        await grant(stack, "alice", 100)
        await wait_until(lambda: asyncio.sleep(0, any(e["available"] == 100 for e in events)))
        job = await stack.create_job()
        await wait_until(lambda: _status(stack, job["id"], "succeeded"))

        async def charged() -> bool:
            return any(e["spent_this_month"] == COST for e in events)

        await wait_until(charged)
        assert any(e["held"] == COST and e["available"] == 100 - COST for e in events)
        assert events[-1] == {"available": 100 - COST, "held": 0, "spent_this_month": COST}


async def test_charges_refunds_and_the_account_pausing_reach_the_products_servers(
    database_url: str, db_engine: AsyncEngine
) -> None:
    receiver = Receiver()
    async with (
        running_stack(
            database_url,
            {"credits_exhausted": True, "output_refusal_words": ["refused"]},
            credits_ledger=True,
            admin_token=ADMIN_TOKEN,
            dispatcher_enabled=True,
            outbound_enabled=True,
            account_probe_seconds=0.2,
        ) as stack,
        receiving(receiver) as url,
    ):
        events = ["credits.charged", "credits.refunded", "account.paused", "account.resumed"]
        added = await stack.http.post(
            "/admin/webhook-endpoints", json={"url": url, "events": events}, headers=ADMIN
        )
        assert added.status_code == 201, added.text
        receiver.secrets = [added.json()["secret"]]
        await grant(stack, "alice", 100)
        ok = await stack.create_job(prompt="a boat")
        refused = await stack.create_job(prompt="a refused scene")

        async def paused() -> bool:
            return await paused_reason(stack) == "upstream_out_of_credits"

        await wait_until(paused)
        stack.sim.config.credits_exhausted = False
        await wait_until(lambda: _status(stack, ok["id"], "succeeded"))
        await wait_until(lambda: _status(stack, refused["id"], "failed"))

        async def told() -> bool:
            return {d.payload["type"] for d in receiver.unique().values()} == set(events)

        await wait_until(told)
        assert len(receiver.unique()) == len(events)  # each said once: one pause, one resume
        by_type = {d.payload["type"]: d.payload["data"] for d in receiver.unique().values()}
        assert by_type["account.paused"]["reason"] == "upstream_out_of_credits"
        assert by_type["account.resumed"]["since"] == by_type["account.paused"]["since"]
        charged, refunded = by_type["credits.charged"], by_type["credits.refunded"]
        assert (charged["id"], charged["amount"]) == (f"charge:{ok['id']}", COST)
        assert (refunded["id"], refunded["amount"]) == (f"release:{refused['id']}", COST)
        assert charged["owner"] == refunded["owner"] == "alice"
        await ledger_is_whole(db_engine)


async def test_the_accounts_forecast_follows_what_seedance_took(database_url: str) -> None:
    async with running_stack(
        database_url, admin_token=ADMIN_TOKEN, dispatcher_enabled=True
    ) as stack:
        stats = (await stack.http.get("/admin/stats", headers=ADMIN)).json()
        assert stats["upstream_account"]["recorded_credits"] is None
        assert stats["upstream_account"]["days_left"] is None
        recorded = await stack.http.post(
            "/admin/account/credits", json={"credits": 10_000}, headers=ADMIN
        )
        assert recorded.status_code == 201, recorded.text
        jobs = [await stack.create_job(prompt=f"boat {i}") for i in range(3)]
        for job in jobs:
            await wait_until(lambda job=job: _status(stack, job["id"], "succeeded"))
        outlook = (await stack.http.get("/admin/stats", headers=ADMIN)).json()["upstream_account"]
        assert outlook["recorded_credits"] == 10_000
        assert outlook["spent_since_recorded"] == 3 * COST
        assert outlook["remaining"] == 10_000 - 3 * COST
        assert len(outlook["spend_by_day"]) == 7
        assert sum(day["credits"] for day in outlook["spend_by_day"]) == 3 * COST
        assert outlook["daily_average"] == 3 * COST / 7
        assert outlook["days_left"] == (10_000 - 3 * COST) / (3 * COST / 7)
        scraped = (await stack.http.get("/metrics", headers=ADMIN)).text
        assert f"seedance_upstream_account_credits_remaining {10_000 - 3 * COST}.0" in scraped
        refused = await stack.http.post(
            "/admin/account/credits", json={"credits": -1}, headers=ADMIN
        )
        assert (refused.status_code, refused.json()["errors"][0]["field"]) == (422, "credits")
