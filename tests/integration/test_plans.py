"""Plans: the token names the plan, the plan sets the limits (models, resolutions, rate,
budget), a plan change takes effect on the next request, `/me/usage` shows it."""

import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from tests.harness import Stack, running_stack

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
