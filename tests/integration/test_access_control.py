"""Every endpoint, tried with no token, bad tokens, and another user's token on every id:
401 or 404 as specified, never another user's data. The routes are read from the app's
OpenAPI, so a new endpoint is covered the day it is added."""

import re
import time
import uuid

import jwt
import pytest

from testkit.harness import Stack, bearer
from tests import upload_files

# webhooks and media files carry their own proof: tested by signature (test_webhooks, test_media)
# no bearer: probes, signed URLs, and the webhooks their senders sign (Seedance's, by a
# per-job signature; Stripe's, verified in test_billing.py)
PUBLIC = {
    "/healthz",
    "/readyz",
    "/webhooks/seedance/{job_id}",
    "/billing/stripe/webhook",
    "/media/{key}",
}
BODIES = {
    ("POST", "/jobs"): {"prompt": "boat"},
    ("POST", "/jobs/batch"): {"prompts": ["a", "b"]},
    ("POST", "/jobs/{job_id}/reports"): {"reason": "spam"},
    ("POST", "/jobs/{job_id}/appeal"): {"statement": "fine"},
}
# anyone may report any job (viewers are rarely owners): the same 202 whatever the id
# names, so it says nothing of whether the job exists (test_moderation.py shows it)
ANSWERED_ALIKE = {("POST", "/jobs/{job_id}/reports")}


def routes(stack: Stack) -> list[tuple[str, str]]:
    """Every documented operation but the public ones (from the app's own OpenAPI)."""
    paths = stack.app.openapi()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        if path not in PUBLIC
        for method in operations
    ]


def bad_tokens(stack: Stack) -> dict[str, str | None]:
    now = int(time.time())
    claims = {
        "sub": "alice",
        "iss": stack.settings.jwt_issuer,
        "aud": stack.settings.jwt_audience,
        "exp": now + 60,
    }
    secret = stack.settings.jwt_secret.get_secret_value()
    return {
        "none": None,
        "expired": jwt.encode({**claims, "exp": now - 120}, secret, algorithm="HS256"),
        "wrong signature": jwt.encode(claims, "not-the-secret-" * 3, algorithm="HS256"),
        "wrong audience": jwt.encode({**claims, "aud": "other"}, secret, algorithm="HS256"),
        "wrong issuer": jwt.encode({**claims, "iss": "other"}, secret, algorithm="HS256"),
        "unsigned": jwt.encode(claims, None, algorithm="none"),
    }


async def alices_things(api: Stack) -> dict[str, str]:
    """The ids of a job, a batch and an upload of alice's, by their path parameter."""
    job = await api.create_job("alice")
    batch = await api.http.post(
        "/jobs/batch", json=BODIES[("POST", "/jobs/batch")], headers=api.headers("alice")
    )
    files = {"file": ("a.jpg", upload_files.phone_jpeg(), "image/jpeg")}
    upload = await api.http.post("/uploads", files=files, headers=api.headers("alice"))
    assert upload.status_code == 201, upload.text
    return {"job_id": job["id"], "batch_id": batch.json()["id"], "upload_id": upload.json()["id"]}


async def test_every_endpoint_refuses_bad_credentials(api: Stack) -> None:
    ids = await alices_things(api)
    checked = 0
    for method, path in routes(api):
        url = path.format(
            **ids,
            subject="alice",
            endpoint_id=uuid.uuid4(),
            delivery_id=uuid.uuid4(),
            key_id=uuid.uuid4(),
        )
        for name, token in bad_tokens(api).items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = await api.http.request(
                method, url, headers=headers, json=BODIES.get((method, path))
            )
            assert response.status_code == 401, (method, path, name)
            assert response.json()["code"] == "unauthorized"
            assert "alice" not in response.text and ids["job_id"] not in response.text
            checked += 1
    assert checked >= 6 * 12


async def test_another_users_ids_are_404_on_every_endpoint(api: Stack) -> None:
    ids = await alices_things(api)
    with_ids = [
        (m, p)
        for m, p in routes(api)
        if "{" in p and not p.startswith("/admin") and (m, p) not in ANSWERED_ALIKE
    ]
    assert len(with_ids) >= 7
    for method, path in with_ids:
        url = path.format(**ids)
        response = await api.http.request(
            method, url, headers=api.headers("bob"), json=BODIES.get((method, path))
        )
        assert response.status_code == 404, (method, path)
        assert ids["job_id"] not in response.text and "alice" not in response.text
    # and nothing of alice's shows up in bob's lists, usage or stream start
    assert (await api.http.get("/jobs", headers=api.headers("bob"))).json()["items"] == []
    assert (await api.http.get("/me/usage", headers=api.headers("bob"))).json()["spent_today"] == 0
    # alice's job was not touched by bob's cancel / promote attempts
    mine = await api.http.get(f"/jobs/{ids['job_id']}", headers=api.headers())
    assert mine.json()["status"] == "queued"
    assert (await api.http.get(f"/uploads/{ids['upload_id']}", headers=api.headers())).is_success


@pytest.mark.parametrize("who", ["user", "none"])
async def test_admin_endpoints_need_the_admin_role(api: Stack, who: str) -> None:
    headers = api.headers("mallory") if who == "user" else {}
    admin_routes = [(m, p) for m, p in routes(api) if p.startswith("/admin")]
    assert admin_routes
    for method, path in admin_routes:
        url = re.sub(r"\{[a-z_]+\}", str(uuid.uuid4()), path)  # ids in paths are UUIDs
        response = await api.http.request(method, url, headers=headers)
        assert response.status_code == (403 if who == "user" else 401), (method, path)
    admin = bearer(api.settings, "ops", admin=True)
    assert (await api.http.get("/admin/stats", headers=admin)).status_code == 200


async def test_unknown_ids_look_like_other_users_ids(api: Stack) -> None:
    job = await api.create_job("alice")
    theirs = await api.http.get(f"/jobs/{job['id']}", headers=api.headers("bob"))
    nobody = await api.http.get(f"/jobs/{uuid.uuid4()}", headers=api.headers("bob"))
    assert (theirs.status_code, theirs.json()) == (nobody.status_code, nobody.json())
