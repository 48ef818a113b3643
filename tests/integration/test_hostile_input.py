"""Hostile input gets a precise 4xx, never a 5xx, and never reaches Seedance."""

import json

import pytest

from testkit.harness import Stack

PROMPT = "a paper boat"
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"x" * 70_000, JSON, 413, "body_too_large"),
        (
            json.dumps({"prompt": "x" * 100_000}).encode(),
            JSON,
            413,
            "body_too_large",
        ),
        (nested(5_000), JSON, 400, "invalid_body"),
        (nested(50), JSON, 422, "validation_failed"),
        (
            b'{"prompt": "\xff\xfe boat"}',
            JSON,
            400,
            "invalid_body",
        ),
        (b'{"prompt": "\\ud800"}', JSON, 422, "validation_failed"),
        (
            b"prompt=boat",
            {"Content-Type": "application/x-www-form-urlencoded"},
            422,
            "validation_failed",
        ),
        (b"<prompt>boat</prompt>", {"Content-Type": "application/xml"}, 422, "validation_failed"),
        (b"", JSON, 422, "validation_failed"),
        (b"null", JSON, 422, "validation_failed"),
        (b'"boat"', JSON, 422, "validation_failed"),
        (
            b'{"prompt": "boat", "prompt": 7}',
            JSON,
            422,
            "validation_failed",
        ),
        (b'{"prompt": 1e999}', JSON, 422, "validation_failed"),
        (
            b'{"prompt": "boat", "duration": 99999999999999999999999}',
            JSON,
            422,
            "validation_failed",
        ),
    ],
)
async def test_hostile_bodies(
    api: Stack, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = await api.http.post("/jobs", content=content, headers={**api.headers(), **headers})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert api.sim.calls["generate"] == 0


async def test_chunked_bodies_are_capped_while_streaming(api: Stack) -> None:
    async def chunks():
        for _ in range(100):
            yield b"x" * 1024

    response = await api.http.post(
        "/jobs", content=chunks(), headers={**api.headers(), "Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")


async def test_oversized_headers_are_refused(api: Stack) -> None:
    response = await api.http.get("/jobs", headers={**api.headers(), "X-Junk": "a" * 20_000})
    assert (response.status_code, response.json()["code"]) == (431, "headers_too_large")
    many = {f"X-Junk-{i}": "a" * 100 for i in range(200)}
    assert (await api.http.get("/jobs", headers={**api.headers(), **many})).status_code == 431


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.png",
        "https://[::1]/a.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://2130706433/a.png",
        "https://0x7f000001/a.png",
        "https://017700000001/a.png",
        "https://user@cdn.images.net/a.png",
        "https://bücher.de/a.png",
        "HTTPS://cdn.images.net/a.png",
        "hTTps://cdn.images.net/a.png",
        "file:///etc/passwd",
        "gopher://cdn.images.net/",
        "https://localhost:443/a.png",
        "https://metadata.google.internal/",
        "https://[::ffff:a9fe:a9fe]/latest",
    ],
)
async def test_url_tricks_are_refused_and_never_forwarded(api: Stack, url: str) -> None:
    for field in ("images", "reference_video_urls", "reference_audio_urls"):
        body = {"prompt": PROMPT, field: [url]}
        response = await api.http.post("/jobs", json=body, headers=api.headers())
        assert response.status_code == 422, (field, url)
        (error,) = response.json()["errors"]
        assert error["field"] == f"{field}[0]"
        assert error["code"] in {
            "url_not_https",
            "url_has_credentials",
            "url_host_not_public",
            "invalid_url",
        }
    assert api.sim.calls["generate"] == 0


async def test_unusual_methods_and_paths(api: Stack) -> None:
    trace = await api.http.request("TRACE", "/jobs", headers=api.headers())
    assert (trace.status_code, trace.headers["Allow"]) == (405, "GET, POST")
    assert (await api.http.get("/jobs/../admin/stats", headers=api.headers())).status_code in {
        403,
        404,
    }
    weird = await api.http.get("/jobs/%00", headers=api.headers())
    assert (weird.status_code, weird.json()["code"]) == (404, "not_found")  # ids are UUIDs
    assert (await api.http.get("/" + "a" * 5000, headers=api.headers())).status_code == 404


async def test_huge_query_values_are_refused(api: Stack) -> None:
    response = await api.http.get("/jobs", params={"cursor": "x" * 10_000}, headers=api.headers())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"


async def test_hostile_authorization_headers(api: Stack) -> None:
    for value in [
        "Bearer " + "a" * 10_000,
        "Bearer a.b.c",
        "Bearer",
        "bearer",
        "Bearer eyJ.eyJ.",
    ]:
        response = await api.http.get("/jobs", headers={"Authorization": value})
        assert response.status_code == 401, value
