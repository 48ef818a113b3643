"""The /jobs API: create, read, list, idempotency, owner isolation and authentication."""

import asyncio
import time
import uuid

import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import JobEvent
from testkit.harness import Stack, bearer

BODY = {"prompt": "a paper boat drifting down a rainy street", "duration": 6}


async def test_create_records_a_queued_job_with_its_first_event(
    api: Stack, db_engine: AsyncEngine
) -> None:
    response = await api.http.post("/jobs", json=BODY, headers=api.headers())
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["estimated_cost"] == 6 * api.settings.cost_per_second["seedance-2-mini"]["720p"]
    assert job["created_at"].endswith("Z")
    async with db_engine.connect() as conn:
        events = (
            await conn.execute(select(JobEvent.from_status, JobEvent.to_status, JobEvent.source))
        ).all()
    assert events == [(None, "queued", "api")]
    fetched = await api.http.get(f"/jobs/{job['id']}", headers=api.headers())
    assert fetched.status_code == 200
    assert fetched.json() == job


async def test_other_users_jobs_look_exactly_like_missing_ones(api: Stack) -> None:
    job = await api.create_job("alice")
    as_bob = await api.http.get(f"/jobs/{job['id']}", headers=api.headers("bob"))
    missing = await api.http.get(f"/jobs/{uuid.uuid4()}", headers=api.headers("bob"))
    assert as_bob.status_code == missing.status_code == 404
    assert as_bob.json() == missing.json()
    assert as_bob.json()["code"] == "job_not_found"
    bob_list = await api.http.get("/jobs", headers=api.headers("bob"))
    assert bob_list.json() == {"items": [], "next_cursor": None}


async def test_a_job_path_without_a_uuid_names_no_job(api: Stack) -> None:
    """Job paths take UUIDs only, so `/jobs/batch` is never read as a job id: GET on it is a
    405 that names the methods it has."""
    response = await api.http.get("/jobs/not-a-uuid", headers=api.headers())
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    batch = await api.http.get("/jobs/batch", headers=api.headers())
    assert (batch.status_code, batch.headers["Allow"]) == (405, "POST")
    options = await api.http.options("/jobs", headers=api.headers())
    assert (options.status_code, options.headers["Allow"]) == (405, "GET, POST")


async def test_same_idempotency_key_returns_the_original_job(api: Stack) -> None:
    headers = {**api.headers(), "Idempotency-Key": "order-42"}
    first = await api.http.post("/jobs", json=BODY, headers=headers)
    again = await api.http.post("/jobs", json=BODY, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()
    # the key is scoped to its user: bob's "order-42" is his own job
    bob = await api.http.post(
        "/jobs", json=BODY, headers={**api.headers("bob"), "Idempotency-Key": "order-42"}
    )
    assert bob.status_code == 202
    assert bob.json()["id"] != first.json()["id"]


async def test_same_key_with_another_body_is_a_conflict(api: Stack) -> None:
    headers = {**api.headers(), "Idempotency-Key": "order-43"}
    assert (await api.http.post("/jobs", json=BODY, headers=headers)).status_code == 202
    other = await api.http.post("/jobs", json={**BODY, "duration": 7}, headers=headers)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"


async def test_equivalent_bodies_share_an_idempotency_key(api: Stack) -> None:
    """Defaults and trimming are applied before comparing, so a retry that spells the same
    request differently is still the same request."""
    headers = {**api.headers(), "Idempotency-Key": "order-44"}
    first = await api.http.post("/jobs", json={"prompt": "boat"}, headers=headers)
    again = await api.http.post(
        "/jobs",
        json={"prompt": " boat ", "duration": 8, "model": "seedance-2-mini"},
        headers=headers,
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


async def test_concurrent_retries_with_one_key_create_one_job(api: Stack) -> None:
    headers = {**api.headers(), "Idempotency-Key": "burst-1"}
    responses = await asyncio.gather(
        *(api.http.post("/jobs", json=BODY, headers=headers) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [200] * 9 + [202]
    assert len({r.json()["id"] for r in responses}) == 1


@pytest.mark.parametrize("key", ["", "a" * 256, "has space", "tab\tkey", "ünï".encode()])
async def test_malformed_idempotency_keys_are_rejected(api: Stack, key: str | bytes) -> None:
    headers = {**api.headers(), "Idempotency-Key": key}
    response = await api.http.post("/jobs", json=BODY, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_pagination_has_no_duplicates_or_gaps_while_rows_are_inserted(api: Stack) -> None:
    originals = [(await api.create_job(prompt=f"variant {i}"))["id"] for i in range(23)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = (await api.http.get("/jobs", params=params, headers=api.headers())).json()
        seen += [job["id"] for job in page["items"]]
        pages += 1
        await api.create_job(prompt=f"inserted during page {pages}")  # newer than the cursor
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert seen[: len(originals)] == list(reversed(originals))  # newest first, all of them


async def test_list_filters_by_status_and_validates_its_query(api: Stack) -> None:
    await api.create_job()
    queued = await api.http.get("/jobs", params={"status": "queued"}, headers=api.headers())
    assert len(queued.json()["items"]) == 1
    done = await api.http.get("/jobs", params={"status": "succeeded"}, headers=api.headers())
    assert done.json()["items"] == []
    for params, field in [
        ({"status": "done"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ]:
        response = await api.http.get("/jobs", params=params, headers=api.headers())
        assert response.status_code == 422, params
        assert response.json()["errors"][0]["field"] == field


def _token(api: Stack, **claims: object) -> str:
    now = int(time.time())
    base = {
        "sub": "alice",
        "iss": api.settings.jwt_issuer,
        "aud": api.settings.jwt_audience,
        "iat": now,
        "exp": now + 60,
    }
    secret = api.settings.jwt_secret.get_secret_value()
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic YWxpY2U6cHc=",
        "Bearer not.a.jwt",
        "Bearer {expired}",
        "Bearer {wrong_secret}",
        "Bearer {wrong_audience}",
        "Bearer {wrong_issuer}",
        "Bearer {no_subject}",
        "Bearer {alg_none}",
    ],
)
async def test_bad_credentials_are_401_with_www_authenticate(
    api: Stack, authorization: str | None
) -> None:
    tokens = {
        "expired": _token(api, exp=int(time.time()) - 3600),
        "wrong_secret": jwt.encode({"sub": "alice"}, "x" * 40, algorithm="HS256"),
        "wrong_audience": _token(api, aud="someone-else"),
        "wrong_issuer": _token(api, iss="someone-else"),
        "no_subject": _token(api, sub=""),
        "alg_none": jwt.encode(
            {
                "sub": "alice",
                "iss": api.settings.jwt_issuer,
                "aud": api.settings.jwt_audience,
                "exp": int(time.time()) + 60,
            },
            None,
            algorithm="none",
        ),
    }
    headers = {} if authorization is None else {"Authorization": authorization.format(**tokens)}
    for method, path in [("POST", "/jobs"), ("GET", "/jobs"), ("GET", f"/jobs/{uuid.uuid4()}")]:
        response = await api.http.request(method, path, json=BODY, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["code"] == "unauthorized"


async def test_openapi_documents_errors_and_examples(api: Stack) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    create = spec["paths"]["/jobs"]["post"]
    assert {"200", "202", "401", "409", "422"} <= create["responses"].keys()
    assert "application/problem+json" in create["responses"]["422"]["content"]
    assert spec["components"]["schemas"]["JobCreate"]["examples"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "404" in spec["paths"]["/jobs/{job_id}"]["get"]["responses"]


async def test_unknown_routes_and_methods_are_problems(api: Stack) -> None:
    missing = await api.http.get("/nope", headers=api.headers())
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    wrong = await api.http.delete("/jobs", headers=api.headers())
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


async def test_admin_role_tokens_still_only_see_their_own_jobs(api: Stack) -> None:
    job = await api.create_job("alice")
    response = await api.http.get(
        f"/jobs/{job['id']}", headers=bearer(api.settings, "root", admin=True)
    )
    assert response.status_code == 404
