"""Plans: the token names the plan, the plan sets the limits (models, resolutions, rate,
budget), a plan change takes effect on the next request, `/me/usage` shows it. Service API
keys act as their subject with their plan, until revoked or expired."""

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import ApiKey
from testkit.harness import Stack, running_stack, wait_until

PLANS = {
    "free": {
        "models": ["seedance-2-mini"],
        "resolutions": ["480p"],
        "rate_limit_create": "3/minute",
        "daily_credit_budget": 8,
    },
    "pro": {"rate_limit_create": "100/minute", "daily_credit_budget": 1000},
}
SMALL = {"prompt": "a lantern in the fog", "resolution": "480p", "duration": 4}  # 4 credits


@pytest.fixture(scope="module")
async def plans_api(database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(
        database_url, plans=PLANS, default_plan="free", jwt_plan_claim="plan"
    ) as stack:
        yield stack


def token_of(stack: Stack, subject: str, **claims: Any) -> dict[str, str]:
    settings = stack.settings
    body = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "exp": int(time.time()) + 600,
        **claims,
    }
    secret = settings.jwt_secret.get_secret_value()
    return {"Authorization": f"Bearer {jwt.encode(body, secret, algorithm='HS256')}"}


async def test_a_free_plan_cannot_use_what_it_does_not_include(plans_api: Stack) -> None:
    free = token_of(plans_api, "frida", plan="free")
    for body, code, field in (
        ({**SMALL, "model": "seedance-2.0", "duration": 5}, "plan_forbids_model", "model"),
        ({**SMALL, "resolution": "720p"}, "plan_forbids_resolution", "resolution"),
    ):
        refused = await plans_api.http.post("/jobs", json=body, headers=free)
        assert refused.status_code == 403, refused.text
        problem = refused.json()
        assert problem["code"] == code and [e["field"] for e in problem["errors"]] == [field]
    batch = await plans_api.http.post(
        "/jobs/batch",
        json={"base": {"resolution": "720p"}, "prompts": ["a", "b"]},
        headers=free,
    )
    assert (batch.status_code, batch.json()["errors"][0]["field"]) == (403, "base.resolution")
    assert (await plans_api.jobs()) == []  # nothing recorded


async def test_each_plan_has_its_own_rate_and_budget(plans_api: Stack) -> None:
    free = token_of(plans_api, "fred", plan="free")
    statuses = [
        (await plans_api.http.post("/jobs", json=SMALL, headers=free)).status_code for _ in range(4)
    ]
    # 4 + 4 credits fill the free budget of 8; the 4th request passes the 3/minute rate
    assert statuses == [202, 202, 402, 429]
    pro = token_of(plans_api, "petra", plan="pro")
    big = {"prompt": "a lantern in the fog", "model": "seedance-2.0", "duration": 5}
    for _ in range(4):  # 4 x 25 credits, 720p, seedance-2.0
        assert (await plans_api.http.post("/jobs", json=big, headers=pro)).status_code == 202


async def test_a_plan_change_in_the_token_takes_effect_on_the_next_request(
    plans_api: Stack,
) -> None:
    big = {"prompt": "a lantern in the fog", "model": "seedance-2.0", "duration": 5}
    before = await plans_api.http.post(
        "/jobs", json=big, headers=token_of(plans_api, "gus", plan="free")
    )
    assert before.status_code == 403
    after = await plans_api.http.post(
        "/jobs", json=big, headers=token_of(plans_api, "gus", plan="pro")
    )
    assert after.status_code == 202
    usage = await plans_api.http.get("/me/usage", headers=token_of(plans_api, "gus", plan="pro"))
    plan = usage.json()["plan"]
    assert (plan["name"], plan["daily_credit_budget"], usage.json()["spent_today"]) == (
        "pro",
        1000,
        25,
    )
    assert set(plan["models"]) == {"seedance-2-mini", "seedance-2.0"}
    # no plan, or one the service does not sell: the default plan
    for claims in ({}, {"plan": "platinum"}, {"plan": ["pro"]}):
        usage = await plans_api.http.get("/me/usage", headers=token_of(plans_api, "gus", **claims))
        assert usage.json()["plan"]["name"] == "free"
        assert usage.json()["plan"]["models"] == ["seedance-2-mini"]


ADMIN_TOKEN = "admin-token-for-the-api-key-tests-0123456789"


async def test_service_api_keys_act_as_their_subject_with_their_plan(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with running_stack(
        database_url, plans=PLANS, default_plan="free", admin_token=ADMIN_TOKEN
    ) as stack:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        created = await stack.http.post(
            "/admin/api-keys",
            json={"subject": "svc:cms", "plan": "pro", "description": "the CMS"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        assert key.startswith("sbff_live_") and len(key) == len("sbff_live_") + 40
        as_service = {"Authorization": f"Bearer {key}"}
        big = {"prompt": "a lantern in the fog", "model": "seedance-2.0", "duration": 5}
        job = await stack.http.post("/jobs", json=big, headers=as_service)
        assert job.status_code == 202, job.text  # the pro plan's model
        assert [j.owner for j in await stack.jobs()] == ["svc:cms"]
        usage = (await stack.http.get("/me/usage", headers=as_service)).json()
        assert usage["plan"]["name"] == "pro"
        listed = (await stack.http.get("/admin/api-keys", headers=admin)).json()
        assert [k["prefix"] for k in listed] == [key[:14]] and key not in str(listed)
        assert listed[0]["last_used_at"] is not None
        # not an admin, whatever it is worth
        assert (await stack.http.get("/admin/stats", headers=as_service)).status_code == 403

        gone = await stack.http.delete(f"/admin/api-keys/{created.json()['id']}", headers=admin)
        assert gone.status_code == 204
        refused = await stack.http.get("/jobs", headers=as_service)
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")

        soon = datetime.now(UTC) + timedelta(seconds=1)
        expiring = await stack.http.post(
            "/admin/api-keys",
            json={"subject": "svc:batch", "expires_at": soon.isoformat()},
            headers=admin,
        )
        short = {"Authorization": f"Bearer {expiring.json()['key']}"}
        assert (await stack.http.get("/jobs", headers=short)).status_code == 200

        async def expired() -> bool:
            return (await stack.http.get("/jobs", headers=short)).status_code == 401

        await wait_until(expired)
        for body, field in (
            ({"subject": "x", "plan": "platinum"}, "plan"),
            ({"subject": "x", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
            ({"subject": "x", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),  # no offset
            ({"subject": ""}, "subject"),
        ):
            bad = await stack.http.post("/admin/api-keys", json=body, headers=admin)
            assert bad.status_code == 422, body
            assert [e["field"] for e in bad.json()["errors"]] == [field], body
        forged = {"Authorization": "Bearer sbff_live_" + "A" * 40}
        assert (await stack.http.get("/jobs", headers=forged)).status_code == 401
    async with db_engine.connect() as conn:
        stored = [repr(row) for row in (await conn.execute(select(ApiKey))).all()]
    assert stored and not [row for row in stored if key in row or key[14:] in row]


async def test_guessing_api_keys_is_refused_before_the_database(database_url: str) -> None:
    """A malformed key is a 401 without a lookup; past RATE_LIMIT_FAILED_AUTH refused keys
    an address gets a 429 before any lookup (500 random keys used to cost 595 database
    transactions; a garbage JWT costs none)."""
    async with running_stack(database_url, rate_limit_failed_auth="3/minute") as stack:
        malformed = await stack.http.get("/jobs", headers={"Authorization": "Bearer sbff_live_x"})
        assert (malformed.status_code, malformed.json()["detail"]) == (
            401,
            "The API key is malformed.",
        )
        statuses = []
        for n in range(6):
            guess = {"Authorization": f"Bearer sbff_live_{n:040d}"}
            response = await stack.http.get("/jobs", headers=guess)
            statuses.append((response.status_code, response.json()["code"]))
        assert statuses[:3] == [(401, "unauthorized")] * 3
        assert statuses[3:] == [(429, "too_many_failed_authentications")] * 3
        assert int(response.headers["retry-after"]) >= 1


async def test_a_plan_no_longer_in_plans_is_said_aloud(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A key made for `pro`, then PLANS without `pro`: its requests get DEFAULT_PLAN, and a
    log line, a metric and the admin view say so (the admin view used to show `pro` only)."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with running_stack(
        database_url, plans=PLANS, default_plan="free", admin_token=ADMIN_TOKEN
    ) as stack:
        created = await stack.http.post(
            "/admin/api-keys", json={"subject": "svc:old", "plan": "pro"}, headers=admin
        )
        assert created.json()["plan_in_force"] == "pro"
    without_pro = {"free": PLANS["free"]}
    async with running_stack(
        database_url, plans=without_pro, default_plan="free", admin_token=ADMIN_TOKEN
    ) as stack:
        as_key = {"Authorization": f"Bearer {created.json()['key']}"}
        usage = (await stack.http.get("/me/usage", headers=as_key)).json()
        listed = (await stack.http.get("/admin/api-keys", headers=admin)).json()
        metrics = (await stack.http.get("/metrics", headers=admin)).text
    assert usage["plan"]["name"] == "free"
    assert [(k["plan"], k["plan_in_force"]) for k in listed] == [("pro", "free")]
    assert 'seedance_unknown_plans_total{plan="pro"}' in metrics
    assert "plan 'pro' is not in PLANS: free applies instead" in caplog.text


async def test_a_valid_key_passes_from_an_address_past_its_cap(database_url: str) -> None:
    """Behind a proxy every client may share one address: 30 guesses from it must not
    lock out a valid key (it was a 429 for as long as the guessing went on), and the
    guesses cost no database statement (unknown keys are refused from `KnownKeys`)."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with running_stack(
        database_url, rate_limit_failed_auth="3/minute", admin_token=ADMIN_TOKEN
    ) as stack:
        created = await stack.http.post(
            "/admin/api-keys", json={"subject": "svc:cms"}, headers=admin
        )
        valid = {"Authorization": f"Bearer {created.json()['key']}"}
        assert (await stack.http.get("/jobs", headers=valid)).status_code == 200
        statuses, statements = [], []
        engine = stack.app.state.services.engine.sync_engine
        with counted(engine, statements):
            for n in range(30):
                guess = {"Authorization": f"Bearer sbff_live_{n:040d}"}
                statuses.append((await stack.http.get("/jobs", headers=guess)).status_code)
        assert statuses == [401] * 3 + [429] * 27
        assert len(statements) <= 1  # the known keys read again, at most once
        assert (await stack.http.get("/jobs", headers=valid)).status_code == 200
        key_id = (await stack.http.get("/admin/api-keys", headers=admin)).json()[0]["id"]
        await stack.http.delete(f"/admin/api-keys/{key_id}", headers=admin)
        refused = await stack.http.get("/jobs", headers=valid)  # revoked: refused at once
        assert (refused.status_code, refused.json()["code"]) == (
            429,
            "too_many_failed_authentications",
        )


@contextlib.contextmanager
def counted(engine: Engine, statements: list[str]) -> Iterator[None]:
    """Every statement `engine` runs meanwhile, appended to `statements`."""

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", record)
