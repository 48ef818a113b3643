"""The adapter reads every observed upstream shape, maps errors to types, and retries only
what is safe to retry (httpx MockTransport: no network)."""

from collections.abc import Callable

import httpx
import pytest

from app.config import Settings
from app.seedance.client import (
    GenerateRequest,
    InsufficientCredits,
    OutcomeUnknown,
    SeedanceClient,
    TaskState,
    UpstreamAuthError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTransient,
    parse_task_report,
)

SETTINGS = Settings(
    _env_file=None,  # type: ignore[call-arg]
    seedance_base_url="https://seedance.test/v2",
    seedance_api_key="unit-test-key",
    seedance_backoff_initial=0.001,
    seedance_backoff_max=0.01,
    seedance_max_attempts=3,
)
REQUEST = GenerateRequest(
    model="seedance-2-mini",
    prompt="a boat",
    duration=8,
    resolution="720p",
    aspect_ratio="16:9",
    images=[],
    reference_video_urls=[],
    reference_audio_urls=[],
    callback_url="https://bff.test/webhooks/seedance/x?sig=y",
)
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A mock upstream answering from a script, one response (or exception) per call."""

    def __init__(self, *script: httpx.Response | Exception) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def client_for(handler: Handler) -> SeedanceClient:
    http = SeedanceClient.create_http_client(SETTINGS, transport=httpx.MockTransport(handler))
    return SeedanceClient(http, SETTINGS)


def ok(data: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"code": 200, "message": "success", "data": data})


@pytest.mark.parametrize(
    ("payload", "state", "video", "error"),
    [
        (
            {
                "code": 200,
                "data": {"task_id": "t", "status": "SUCCESS", "response": ["https://v/1.mp4"]},
            },
            TaskState.SUCCEEDED,
            "https://v/1.mp4",
            None,
        ),
        (
            {"task_id": "t", "status": "success", "response": "https://v/1.mp4"},
            TaskState.SUCCEEDED,
            "https://v/1.mp4",
            None,
        ),
        (
            {"task_id": "t", "status": "FAILED", "error_message": "nsfw"},
            TaskState.FAILED,
            None,
            "nsfw",
        ),
        ({"task_id": "t", "status": "Failed", "error": "boom"}, TaskState.FAILED, None, "boom"),
        (
            {"data": {"task_id": "t", "status": "FAILED", "message": "m"}},
            TaskState.FAILED,
            None,
            "m",
        ),
        ({"task_id": "t", "status": "FAILED"}, TaskState.FAILED, None, "the task failed upstream"),
        ({"task_id": "t", "status": "PENDING"}, TaskState.IN_PROGRESS, None, None),
        ({"task_id": "t", "status": "in_progress"}, TaskState.IN_PROGRESS, None, None),
        ({"task_id": "t", "status": "QUEUED_SOMEWHERE_NEW"}, TaskState.IN_PROGRESS, None, None),
    ],
)
def test_reports_in_every_observed_shape(payload, state, video, error) -> None:
    report = parse_task_report(payload)
    assert (report.task_id, report.state, report.video_url, report.error) == (
        "t",
        state,
        video,
        error,
    )


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "SUCCESS",
        {"status": "SUCCESS"},
        {"task_id": "", "status": "SUCCESS"},
        {"task_id": "t"},
        {"task_id": "t", "status": "SUCCESS"},
        {"task_id": "t", "status": "SUCCESS", "response": []},
        {"task_id": "t", "status": "SUCCESS", "response": ["javascript:alert(1)"]},
        {"task_id": "x" * 200, "status": "PENDING"},
    ],
)
def test_unreadable_reports_are_protocol_errors(payload) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_task_report(payload)


async def test_generate_sends_the_key_and_reads_either_task_id_placement() -> None:
    upstream = Recorder(ok({"task_id": "nested"}), httpx.Response(200, json={"task_id": "top"}))
    client = client_for(upstream)
    assert await client.generate(REQUEST) == "nested"
    assert await client.generate(REQUEST) == "top"
    sent = upstream.requests[0]
    assert sent.url == "https://seedance.test/v2/generate"
    assert sent.headers["authorization"] == "Bearer unit-test-key"
    body = httpx.Response(200, content=sent.content).json()
    assert body == {
        "model": "seedance-2-mini",
        "prompt": "a boat",
        "duration": 8,
        "resolution": "720p",
        "aspect_ratio": "16:9",
        "callback_url": "https://bff.test/webhooks/seedance/x?sig=y",
    }


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(400, json={"code": 400, "message": "bad duration"}), UpstreamRejected),
        (httpx.Response(402, json={"code": 402, "message": "no credits"}), InsufficientCredits),
        (httpx.Response(401, json={"code": 401, "message": "bad key"}), UpstreamAuthError),
        (httpx.Response(403, text="forbidden"), UpstreamAuthError),
        (httpx.Response(200, json={"code": 402, "message": "no credits"}), InsufficientCredits),
        (httpx.Response(200, json={"code": 400, "message": "bad"}), UpstreamRejected),
        (httpx.Response(200, text="<html>"), UpstreamProtocolError),
        (httpx.Response(200, json={"code": 200, "data": {}}), OutcomeUnknown),
    ],
)
async def test_permanent_generate_errors_are_typed_and_not_retried(response, error) -> None:
    upstream = Recorder(response, ok({"task_id": "never"}))
    with pytest.raises(error):
        await client_for(upstream).generate(REQUEST)
    assert len(upstream.requests) == 1


async def test_5xx_and_connection_errors_are_retried_then_succeed() -> None:
    upstream = Recorder(
        httpx.Response(503, json={"code": 503, "message": "busy"}),
        httpx.ConnectError("refused"),
        ok({"task_id": "t-1"}),
    )
    assert await client_for(upstream).generate(REQUEST) == "t-1"
    assert len(upstream.requests) == 3


async def test_a_429_on_generate_is_not_retried_the_queue_waits_for_a_slot() -> None:
    upstream = Recorder(
        httpx.Response(429, headers={"Retry-After": "0"}, json={"code": 429}),
        ok({"task_id": "t-1"}),
    )
    with pytest.raises(UpstreamRateLimited):
        await client_for(upstream).generate(REQUEST)
    assert len(upstream.requests) == 1


async def test_a_429_on_status_is_retried() -> None:
    upstream = Recorder(
        httpx.Response(429, headers={"Retry-After": "0"}, json={"code": 429}),
        ok({"task_id": "t-9", "status": "SUCCESS", "response": ["https://v/9.mp4"]}),
    )
    assert (await client_for(upstream).status("t-9")).task_id == "t-9"
    assert len(upstream.requests) == 2


async def test_retries_stop_after_the_configured_attempts() -> None:
    upstream = Recorder(*[httpx.ConnectError("refused")] * SETTINGS.seedance_max_attempts)
    with pytest.raises(UpstreamTransient):
        await client_for(upstream).generate(REQUEST)
    assert len(upstream.requests) == SETTINGS.seedance_max_attempts


async def test_rate_limit_carries_retry_after() -> None:
    upstream = Recorder(httpx.Response(429, headers={"Retry-After": "7"}, json={}))
    with pytest.raises(UpstreamRateLimited) as caught:
        await client_for(upstream).generate(REQUEST)
    assert caught.value.retry_after == 7.0


async def test_a_generate_that_may_have_been_received_is_never_repeated() -> None:
    upstream = Recorder(httpx.ReadTimeout("no answer"), ok({"task_id": "second"}))
    with pytest.raises(OutcomeUnknown):
        await client_for(upstream).generate(REQUEST)
    assert len(upstream.requests) == 1


async def test_status_is_idempotent_so_read_timeouts_are_retried() -> None:
    upstream = Recorder(
        httpx.ReadTimeout("slow"),
        ok({"task_id": "t-9", "status": "SUCCESS", "response": ["https://v/9.mp4"]}),
    )
    report = await client_for(upstream).status("t-9")
    assert report.video_url == "https://v/9.mp4"
    assert upstream.requests[-1].url.params["task_id"] == "t-9"
    assert len(upstream.requests) == 2


async def test_status_errors() -> None:
    with pytest.raises(UpstreamNotFound):
        await client_for(Recorder(httpx.Response(404, json={"code": 404}))).status("t")
    other_task = ok({"task_id": "other", "status": "PENDING"})
    with pytest.raises(UpstreamProtocolError):
        await client_for(Recorder(other_task)).status("t")
