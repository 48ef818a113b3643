"""Every rule of docs/upstream.md, both sides of every boundary, over HTTP: a bad body is a 422
problem naming the field and a stable code, and nothing is recorded or sent upstream."""

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Job
from testkit.harness import Stack

PROMPT = "a paper boat drifting down a rainy street"
IMAGE = "https://cdn.images.net/cat.png"

VALID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "defaults",
        {"prompt": PROMPT},
        {"model": "seedance-2-mini", "duration": 8, "resolution": "720p", "aspect_ratio": "16:9"},
    ),
    ("prompt 1 char", {"prompt": "a"}, {"prompt": "a"}),
    ("prompt 2000 chars", {"prompt": "x" * 2000}, {"prompt": "x" * 2000}),
    # the limit counts the text as sent (as the schema's maxLength does), spaces included
    ("prompt trimmed", {"prompt": "  " + "x" * 1995 + "\r\n "}, {"prompt": "x" * 1995}),
    ("duration 8.0 is 8", {"prompt": PROMPT, "duration": 8.0}, {"duration": 8}),
    (
        "prompt newlines and tabs",
        {"prompt": "line one\n\tline two"},
        {"prompt": "line one\n\tline two"},
    ),
    ("prompt unicode", {"prompt": "紙の船 🚣"}, {"prompt": "紙の船 🚣"}),
    ("mini duration 4", {"prompt": PROMPT, "duration": 4}, {"duration": 4}),
    ("mini duration 15", {"prompt": PROMPT, "duration": 15}, {"duration": 15}),
    (
        "standard default duration",
        {"prompt": PROMPT, "model": "seedance-2.0"},
        {"model": "seedance-2.0", "duration": 5},
    ),
    ("standard 10", {"prompt": PROMPT, "model": "seedance-2.0", "duration": 10}, {"duration": 10}),
    ("standard 15", {"prompt": PROMPT, "model": "seedance-2.0", "duration": 15}, {"duration": 15}),
    ("480p", {"prompt": PROMPT, "resolution": "480p"}, {"resolution": "480p"}),
    *[
        (f"ratio {r}", {"prompt": PROMPT, "aspect_ratio": r}, {"aspect_ratio": r})
        for r in ["16:9", "9:16", "4:3", "3:4", "1:1", "21:9", "adaptive"]
    ],
    ("image-to-video without prompt", {"images": [IMAGE]}, {"images": [IMAGE], "prompt": None}),
    ("4 images", {"prompt": PROMPT, "images": [IMAGE] * 4}, {"images": [IMAGE] * 4}),
    (
        "images with a fixed ratio",
        {"images": [IMAGE], "aspect_ratio": "9:16"},
        {"aspect_ratio": "9:16"},
    ),
    ("null images", {"prompt": PROMPT, "images": None}, {"images": []}),
    (
        "4 reference videos",
        {"prompt": PROMPT, "reference_video_urls": [IMAGE] * 4},
        {"reference_video_urls": [IMAGE] * 4},
    ),
    (
        "reference audio",
        {"prompt": PROMPT, "reference_audio_urls": ["https://a.b.io/x.mp3"]},
        {"reference_audio_urls": ["https://a.b.io/x.mp3"]},
    ),
]

INVALID: list[tuple[str, Any, str, str]] = [
    ("no prompt, no images", {}, "prompt", "prompt_required"),
    ("empty prompt", {"prompt": ""}, "prompt", "prompt_empty"),
    ("blank prompt", {"prompt": " \n\t "}, "prompt", "prompt_empty"),
    ("prompt 2001 chars", {"prompt": "x" * 2001}, "prompt", "prompt_too_long"),
    ("prompt NUL", {"prompt": "boat\x00"}, "prompt", "prompt_control_characters"),
    ("prompt ESC", {"prompt": "boat\x1b[31m"}, "prompt", "prompt_control_characters"),
    ("prompt lone CR", {"prompt": "boat\rrain"}, "prompt", "prompt_control_characters"),
    ("prompt DEL", {"prompt": "boat\x7f"}, "prompt", "prompt_control_characters"),
    ("prompt not a string", {"prompt": 42}, "prompt", "invalid_type"),
    ("unknown model", {"prompt": PROMPT, "model": "seedance-3"}, "model", "invalid_choice"),
    ("mini duration 3", {"prompt": PROMPT, "duration": 3}, "duration", "invalid_duration"),
    ("mini duration 16", {"prompt": PROMPT, "duration": 16}, "duration", "invalid_duration"),
    ("mini duration 0", {"prompt": PROMPT, "duration": 0}, "duration", "invalid_duration"),
    ("mini duration -8", {"prompt": PROMPT, "duration": -8}, "duration", "invalid_duration"),
    (
        "standard duration 4",
        {"prompt": PROMPT, "model": "seedance-2.0", "duration": 4},
        "duration",
        "invalid_duration",
    ),
    (
        "standard duration 8",
        {"prompt": PROMPT, "model": "seedance-2.0", "duration": 8},
        "duration",
        "invalid_duration",
    ),
    (
        "standard duration 16",
        {"prompt": PROMPT, "model": "seedance-2.0", "duration": 16},
        "duration",
        "invalid_duration",
    ),
    ("duration as string", {"prompt": PROMPT, "duration": "8"}, "duration", "invalid_type"),
    ("duration as fraction", {"prompt": PROMPT, "duration": 8.5}, "duration", "invalid_type"),
    ("duration as string", {"prompt": PROMPT, "duration": "8"}, "duration", "invalid_type"),
    ("prompt 2000 + spaces", {"prompt": "x" * 2000 + " "}, "prompt", "prompt_too_long"),
    ("prompt \\x1c at the end", {"prompt": "boat\x1c"}, "prompt", "prompt_control_characters"),
    ("duration as bool", {"prompt": PROMPT, "duration": True}, "duration", "invalid_type"),
    ("resolution 1080p", {"prompt": PROMPT, "resolution": "1080p"}, "resolution", "invalid_choice"),
    ("resolution case", {"prompt": PROMPT, "resolution": "720P"}, "resolution", "invalid_choice"),
    ("ratio 2:1", {"prompt": PROMPT, "aspect_ratio": "2:1"}, "aspect_ratio", "invalid_choice"),
    (
        "adaptive with images",
        {"images": [IMAGE], "aspect_ratio": "adaptive"},
        "aspect_ratio",
        "invalid_aspect_ratio",
    ),
    ("0 images", {"prompt": PROMPT, "images": []}, "images", "invalid_image_count"),
    ("5 images", {"prompt": PROMPT, "images": [IMAGE] * 5}, "images", "invalid_image_count"),
    ("images not a list", {"prompt": PROMPT, "images": IMAGE}, "images", "invalid_type"),
    (
        "http image",
        {"prompt": PROMPT, "images": [IMAGE, "http://cdn.images.net/a.png"]},
        "images[1]",
        "url_not_https",
    ),
    ("loopback image", {"images": ["https://127.0.0.1/a.png"]}, "images[0]", "url_host_not_public"),
    (
        "metadata image",
        {"images": ["https://169.254.169.254/latest"]},
        "images[0]",
        "url_host_not_public",
    ),
    (
        "5 reference videos",
        {"prompt": PROMPT, "reference_video_urls": [IMAGE] * 5},
        "reference_video_urls",
        "invalid_reference_count",
    ),
    (
        "private reference audio",
        {"prompt": PROMPT, "reference_audio_urls": ["https://10.0.0.8/a.mp3"]},
        "reference_audio_urls[0]",
        "url_host_not_public",
    ),
    (
        "callback_url is ours to set",
        {"prompt": PROMPT, "callback_url": "https://evil.example.org/cb"},
        "callback_url",
        "unknown_field",
    ),
    ("the upstream key is ours", {"prompt": PROMPT, "api_key": "x"}, "api_key", "unknown_field"),
    ("unknown field", {"prompt": PROMPT, "seed": 3}, "seed", "unknown_field"),
    ("array body", [PROMPT], "body", "invalid_type"),
]


@pytest.mark.parametrize(("name", "body", "expected"), VALID, ids=[c[0] for c in VALID])
async def test_valid_bodies_are_accepted_and_normalized(
    api: Stack, name: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    response = await api.http.post("/jobs", json=body, headers=api.headers())
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert {k: job[k] for k in expected} == expected


@pytest.mark.parametrize(("name", "body", "field", "code"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_bodies_get_a_precise_problem(
    api: Stack, db_engine: AsyncEngine, name: str, body: Any, field: str, code: str
) -> None:
    response = await api.http.post("/jobs", json=body, headers=api.headers())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert problem["status"] == 422
    assert {"type", "title", "detail"} <= problem.keys()
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [(field, code)]
    assert problem["errors"][0]["message"]
    async with db_engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Job)) == 0
    assert api.sim.calls["generate"] == 0


async def test_several_bad_fields_are_all_reported(api: Stack) -> None:
    body = {"prompt": "", "duration": 99, "resolution": "4k", "images": []}
    response = await api.http.post("/jobs", json=body, headers=api.headers())
    fields = {(e["field"], e["code"]) for e in response.json()["errors"]}
    assert fields == {
        ("images", "invalid_image_count"),
        ("prompt", "prompt_empty"),
        ("duration", "invalid_duration"),
        ("resolution", "invalid_choice"),
    }


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"prompt": ', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"prompt=x", "text/plain"),
    ],
)
async def test_unreadable_bodies_are_422(api: Stack, content: bytes, content_type: str) -> None:
    headers = {**api.headers(), "Content-Type": content_type}
    response = await api.http.post("/jobs", content=content, headers=headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
