"""The credits ledger (issue 35): holds that follow each job, grants that move once, a
balance no interleaving can overdraw (hypothesis), against Postgres over real HTTP."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.models import CreditAccount, CreditTransfer, Job, OutboundEvent
from app.jobs import scheduler
from app.jobs.states import EventSource, JobStatus, move
from testkit.databases import racing
from testkit.harness import Stack, running_stack, wait_until
from testkit.stripe_events import STRIPE_SECRET, send_stripe, stripe_event

ADMIN_TOKEN = "credits-admin-token-" + "c" * 24
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
COST = 16  # a default job (seedance-2-mini, 5 s, 720p) in the test cost table


async def grant(stack: Stack, subject: str, amount: int, key: str | None = None) -> Any:
    headers = {**ADMIN, **({"Idempotency-Key": key} if key else {})}
    return await stack.http.post(
        f"/admin/users/{subject}/credits",
        json={"amount": amount, "reason": "test"},
        headers=headers,
    )


async def job_out(stack: Stack, job_id: str, subject: str = "alice") -> dict[str, Any]:
    response = await stack.http.get(f"/jobs/{job_id}", headers=stack.headers(subject))
    return dict(response.json())


async def ledger_is_whole(db_engine: AsyncEngine) -> None:
    """Double entry: every credit is someone's debit, no user below zero, and each job
    has at most one settlement, matching its state."""
    async with AsyncSession(db_engine) as session:
        accounts = list(await session.scalars(select(CreditAccount)))
        assert sum(a.credits_posted - a.debits_posted for a in accounts) == sum(
            a.debits_pending for a in accounts if a.kind == "system"
        )  # the pending side is on users only: posted sums cancel out
        for account in accounts:
            if account.kind == "user":
                assert account.credits_posted - account.debits_posted - account.debits_pending >= 0
        held = {a.id: a.debits_pending for a in accounts}
        transfers = list(await session.scalars(select(CreditTransfer)))
        jobs = {j.id: j for j in await session.scalars(select(Job))}
    pending: dict[str, int] = {}
    for transfer in transfers:
        if transfer.kind == "hold" and transfer.state == "pending":
            pending[transfer.debit_account] = (
                pending.get(transfer.debit_account, 0) + transfer.amount
            )
    assert {k: v for k, v in held.items() if v} == pending
    for job_id, job in jobs.items():
        settled = [t.kind for t in transfers if t.job_id == job_id and t.kind != "hold"]
        holds = [t for t in transfers if t.job_id == job_id and t.kind == "hold"]
        assert len(holds) <= 1 and len(settled) <= 1
        if not holds:
            continue
        expected = {
            JobStatus.SUCCEEDED: (["charge"], "posted", "charged"),
            JobStatus.FAILED: (["release"], "voided", "refunded"),
            JobStatus.CANCELED: (["release"], "voided", "refunded"),
        }.get(JobStatus(job.status), ([], "pending", "held"))
        assert (settled, holds[0].state, job.credit_state) == expected, job.status


async def test_a_job_holds_its_cost_charged_on_success_and_refunded_otherwise(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(
        database_url,
        {"output_refusal_words": ["refused"]},
        credits_ledger=True,
        admin_token=ADMIN_TOKEN,
        dispatcher_enabled=True,
    ) as stack:
        nothing = await stack.http.post("/jobs", json={"prompt": "a boat"}, headers=stack.headers())
        assert (nothing.status_code, nothing.json()["code"]) == (402, "insufficient_credits")
        assert (nothing.json()["required"], nothing.json()["available"]) == (COST, 0)
        first = await grant(stack, "alice", 100, key="welcome")
        again = await grant(stack, "alice", 100, key="welcome")
        assert (first.status_code, again.status_code) == (201, 201)
        assert first.json() == again.json()  # the replay moved nothing
        ok = await stack.create_job(prompt="a boat")
        refused = await stack.create_job(prompt="a refused scene")
        assert ok["cost"] == {"estimated": COST, "held": COST, "charged": 0, "refunded": 0}
        await wait_until(lambda: _status(stack, ok["id"], "succeeded"))
        await wait_until(lambda: _status(stack, refused["id"], "failed"))
        assert (await job_out(stack, ok["id"]))["cost"]["charged"] == COST
        assert (await job_out(stack, refused["id"]))["cost"]["refunded"] == COST
        credits = (await stack.http.get("/me/credits", headers=stack.headers())).json()
        assert credits == {
            "available": 100 - COST,
            "held": 0,
            "spent_this_month": COST,
            "expiring": [],
        }
        statement = (
            await stack.http.get("/me/credits/transactions", headers=stack.headers())
        ).json()
        kinds = sorted((t["kind"], t["available_change"]) for t in statement["items"])
        assert kinds == sorted(
            [("grant", 100), ("hold", -COST), ("hold", -COST), ("charge", 0), ("release", COST)]
        )
        too_much = await grant(stack, "alice", -1000)
        assert (too_much.status_code, too_much.json()["code"]) == (409, "would_overdraw")
        taken = await grant(stack, "alice", -(100 - COST))
        assert taken.json()["balance_after"] == 0
        await ledger_is_whole(db_engine)


async def _status(stack: Stack, job_id: str, wanted: str) -> bool:
    return bool((await job_out(stack, job_id))["status"] == wanted)


async def test_500_concurrent_creates_against_a_balance_for_10_jobs_accept_10(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(database_url, credits_ledger=True, admin_token=ADMIN_TOKEN) as stack:
        assert (await grant(stack, "alice", 10 * COST)).status_code == 201
        headers = stack.headers()
        # 500 at once through 100 connections: a request may wait its turn for a connection
        # as long as the machine needs (no pool deadline), each answer still within 30 s
        timeout = httpx.Timeout(30, pool=None)
        async with httpx.AsyncClient(base_url=stack.url, timeout=timeout) as http:

            async def create(index: int) -> int:
                body = {"prompt": f"boat {index}"}
                return (await http.post("/jobs", json=body, headers=headers)).status_code

            codes = await asyncio.gather(*(create(i) for i in range(500)))
        assert (codes.count(202), codes.count(402)) == (10, 490)
        credits = (await stack.http.get("/me/credits", headers=headers)).json()
        assert (credits["available"], credits["held"]) == (0, 10 * COST)
        await ledger_is_whole(db_engine)


STRIPE: dict[str, Any] = {"stripe_webhook_secret": STRIPE_SECRET}


@pytest.fixture
async def ledger_stacks(database_url: str) -> AsyncIterator[tuple[Stack, Stack]]:
    """Two instances of the service on one database, the ledger on, loops off."""
    async with (
        running_stack(database_url, credits_ledger=True, admin_token=ADMIN_TOKEN, **STRIPE) as one,
        running_stack(database_url, credits_ledger=True, admin_token=ADMIN_TOKEN, **STRIPE) as two,
    ):
        yield one, two


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["create", "batch", "succeed", "fail", "cancel", "delete", "grant", "topup"]
        ),
        st.sampled_from(["ann", "ben"]),
        st.integers(min_value=0, max_value=9),
    ),
    min_size=5,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS)
async def test_no_interleaving_of_creates_ends_and_grants_breaks_the_ledger(
    ledger_stacks: tuple[Stack, Stack], db_engine: AsyncEngine, ops: list[tuple[str, str, int]]
) -> None:
    """Random creates, batches, successes, failures, cancels, deletes, grants and Stripe
    top-ups (a checkout per user and n: a repeated one is Stripe retrying, moving nothing),
    sent through two service instances on one database, half of them at once."""
    stacks = ledger_stacks
    created: list[tuple[str, str]] = []

    async def run(index: int, op: str, who: str, n: int) -> None:
        stack = stacks[index % 2]
        if op == "grant":
            await grant(stack, who, 1 + n * 7, key=f"{who}-{uuid.uuid4()}")
        elif op == "topup":
            checkout = stripe_event(f"cs_{who}_{n}", {"subject": who, "credits": str(10 * n + 5)})
            assert (await send_stripe(stack, checkout)).status_code == 200
        elif op in ("create", "batch"):
            body: dict[str, Any] = (
                {"prompt": f"p{n}"} if op == "create" else {"prompts": ["a", "b"]}
            )
            path = "/jobs" if op == "create" else "/jobs/batch"
            response = await stack.http.post(path, json=body, headers=stack.headers(who))
            assert response.status_code in (202, 402), response.text
            if response.status_code == 202:
                answer = response.json()
                for job in answer.get("jobs", [answer]):
                    created.append((job["id"], who))
        elif created:
            job_id, owner = created[n % len(created)]
            if op == "cancel":
                await stack.http.post(f"/jobs/{job_id}/cancel", headers=stack.headers(owner))
            elif op == "delete":
                await stack.http.delete(f"/jobs/{job_id}", headers=stack.headers(owner))
            else:
                await end(
                    stack,
                    uuid.UUID(job_id),
                    JobStatus.SUCCEEDED if op == "succeed" else JobStatus.FAILED,
                )

    half = len(ops) // 2
    await asyncio.gather(*(run(i, *op) for i, op in enumerate(ops[:half])))
    for i, op in enumerate(ops[half:]):
        await run(i, *op)
    await ledger_is_whole(db_engine)
    async with AsyncSession(db_engine) as session:
        topups = list(
            await session.scalars(
                select(CreditTransfer.idempotency_key).where(CreditTransfer.kind == "topup")
            )
        )
    checkouts = {f"topup:stripe:cs_{who}_{n}" for op, who, n in ops if op == "topup"}
    assert checkouts <= set(topups)  # each paid once (the keys are unique), however often sent


async def end(stack: Stack, job_id: uuid.UUID, to: JobStatus) -> None:
    """What the dispatcher and the media worker do at a job's end: its move, under the
    row lock (a job already ended stays as it is)."""
    async with stack.app.state.services.sessionmaker() as session, session.begin():
        job = await session.get(Job, job_id, with_for_update=True)
        assert job is not None
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            if to is JobStatus.SUCCEEDED and job.status == JobStatus.QUEUED:
                move(session, job, JobStatus.RUNNING, EventSource.DISPATCHER)
            move(session, job, to, EventSource.MEDIA)


async def paused_reason(stack: Stack) -> str | None:
    queue = (await stack.http.get("/admin/queue", headers=ADMIN)).json()
    return queue["paused"]["reason"] if queue["paused"] else None


async def test_an_account_out_of_credits_pauses_dispatch_and_no_job_fails(
    database_url: str,
) -> None:
    async with running_stack(
        database_url,
        {"credits_exhausted": True},
        dispatcher_enabled=True,
        admin_token=ADMIN_TOKEN,
        account_probe_seconds=0.2,
    ) as stack:
        jobs = [await stack.create_job(prompt=f"backlog {i}") for i in range(12)]

        async def paused() -> bool:
            return await paused_reason(stack) == "upstream_out_of_credits"

        await wait_until(paused)
        scraped = (await stack.http.get("/metrics", headers=ADMIN)).text
        assert 'seedance_upstream_account_paused{reason="upstream_out_of_credits"} 1.0' in scraped
        # every job waits in its place with no attempt counted; then probes go one at a time
        # and are refused (a probe in flight holds the only attempt)

        async def no_attempt_counted() -> bool:
            return all(j.submit_attempts == 0 for j in await stack.jobs())

        await wait_until(no_attempt_counted)
        probes_before = stack.sim.calls["generate"]
        await wait_until(lambda: asyncio.sleep(0, stack.sim.calls["generate"] >= probes_before + 3))
        during_probes = [await stack.jobs() for _ in range(5)]
        assert all({j.status for j in jobs_now} == {"queued"} for jobs_now in during_probes)
        assert all(sum(j.submit_attempts for j in jobs_now) <= 1 for jobs_now in during_probes)
        stack.sim.config.credits_exhausted = False

        async def all_succeeded() -> bool:
            return {j.status for j in await stack.jobs()} == {"succeeded"}

        await wait_until(all_succeeded, within=60)
        assert await paused_reason(stack) is None
        assert len(jobs) == 12


async def test_one_grant_replayed_at_the_same_moment_moves_money_once(
    database_url: str,
) -> None:
    """Twelve deliveries of one grant at once (a client retrying, Stripe redelivering): the
    key's unique index lets one through; every other answers with that transfer, no 500."""
    async with running_stack(database_url, credits_ledger=True, admin_token=ADMIN_TOKEN) as stack:
        answers = await asyncio.gather(*(grant(stack, "alice", 7, key="once") for _ in range(12)))
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        credits = (await stack.http.get("/me/credits", headers=stack.headers())).json()
        assert credits["available"] == 7


async def test_two_refusals_at_once_on_a_fresh_database_announce_one_pause(
    db_engine: AsyncEngine,
) -> None:
    """The capacity row does not exist yet: the second refusal must still wait for the
    first's lock and see its pause, not announce another (a product was told twice)."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    reason = scheduler.PauseReason.OUT_OF_CREDITS
    started = await racing(db_engine, lambda session: scheduler.pause(session, settings, reason))
    assert started == (True, False)
    async with AsyncSession(db_engine) as session:
        announced = await session.scalars(
            select(OutboundEvent.type).where(OutboundEvent.type == "account.paused")
        )
        assert len(announced.all()) == 1


async def test_a_refused_key_pauses_dispatch_until_it_works_again(database_url: str) -> None:
    async with running_stack(
        database_url,
        {"api_key": "rotated-away"},
        dispatcher_enabled=True,
        admin_token=ADMIN_TOKEN,
        account_probe_seconds=0.2,
    ) as stack:
        for i in range(4):
            await stack.create_job(prompt=f"waiting {i}")

        async def paused() -> bool:
            return await paused_reason(stack) == "upstream_key_rejected"

        await wait_until(paused)
        await wait_until(lambda: asyncio.sleep(0, stack.sim.calls["generate"] >= 6))
        assert {j.status for j in await stack.jobs()} == {"queued"}
        stack.sim.config.api_key = stack.settings.seedance_api_key.get_secret_value()

        async def all_succeeded() -> bool:
            return {j.status for j in await stack.jobs()} == {"succeeded"}

        await wait_until(all_succeeded, within=60)


async def test_a_task_failing_on_the_one_statement_path_is_refunded(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """A running job's task failing is applied in one statement on Postgres (no session,
    no ORM): the settlement trigger refunds it all the same."""
    async with running_stack(
        database_url,
        {"task_failure_rate": 1.0},
        credits_ledger=True,
        admin_token=ADMIN_TOKEN,
        dispatcher_enabled=True,
    ) as stack:
        await grant(stack, "alice", 100)
        job = await stack.create_job()
        await wait_until(lambda: _status(stack, job["id"], "failed"))
        out = await job_out(stack, job["id"])
        assert out["error_code"] == "upstream_failed"
        assert out["cost"] == {"estimated": COST, "held": 0, "charged": 0, "refunded": COST}
        credits = (await stack.http.get("/me/credits", headers=stack.headers())).json()
        assert (credits["available"], credits["held"]) == (100, 0)
        await ledger_is_whole(db_engine)
