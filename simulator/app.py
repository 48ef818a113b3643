"""A Seedance v2 simulator that speaks the contract of docs/upstream.md.

It checks the bearer key, validates like the real API (400 with a message), fetches every
input URL when a task starts and fails the task when one cannot be fetched or is not the
kind its field takes, runs each task PENDING -> IN_PROGRESS -> SUCCESS/FAILED over a
configurable time, answers
`GET /v2/status`, serves a real MP4 of the asked size and length as the result (whose URL
expires, may redirect, and can be made to misbehave), and POSTs the callback. Faults are
injected from a seeded RNG. Counters of every call received let tests and benchmarks
assert what each job cost upstream. Control endpoints live under `/_sim/` (no auth).
"""

import asyncio
import contextlib
import hashlib
import ipaddress
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.videos import dimensions, padded, padded_size, render

MODELS = {"seedance-2-mini": set(range(4, 16)), "seedance-2.0": {5, 10, 15}}
RESOLUTIONS = {"480p", "720p"}
ASPECT_RATIOS = {"16:9", "9:16", "4:3", "3:4", "1:1", "21:9", "adaptive"}


class SimulatorConfig(BaseModel):
    """Behaviour and fault injection; every rate is a probability in [0, 1]."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_key: str = "sim-dev-key"
    seed: int | None = None
    task_seconds: float = Field(3.0, ge=0, description="time from accept to final state")
    generate_latency_seconds: float = Field(0.0, ge=0)
    generate_5xx_rate: float = Field(0.0, ge=0, le=1)
    generate_429_rate: float = Field(0.0, ge=0, le=1)
    retry_after_seconds: int | None = Field(1, ge=0, description="None: no Retry-After")
    max_concurrent_tasks: int | None = Field(
        None,
        ge=1,
        description="answer 429 (with Retry-After) while this many tasks render (an account)",
    )
    generate_hang_rate: float = Field(0.0, ge=0, le=1, description="accept, then answer too late")
    generate_hang_seconds: float = Field(30.0, ge=0)
    credits_exhausted: bool = False
    task_failure_rate: float = Field(0.0, ge=0, le=1)
    failure_quotes_prompt: bool = Field(
        False, description="a failure's message quotes the prompt, as a moderation refusal does"
    )
    input_refusal_words: list[str] = Field(
        default_factory=list,
        description="a prompt holding one of these is refused at input (400, "
        "InputTextSensitiveContentDetected), as the real API refuses sensitive content",
    )
    output_refusal_words: list[str] = Field(
        default_factory=list,
        description="a task whose prompt holds one of these fails at output "
        "(OutputVideoSensitiveContentDetected)",
    )
    never_finish_rate: float = Field(0.0, ge=0, le=1)
    callback_loss_rate: float = Field(0.0, ge=0, le=1)
    callback_duplicate_rate: float = Field(0.0, ge=0, le=1)
    callback_out_of_order_rate: float = Field(
        0.0, ge=0, le=1, description="send a stale IN_PROGRESS after the final callback"
    )
    callback_delay_seconds: float = Field(0.0, ge=0)
    reject_local_urls: bool = Field(
        True,
        description="the real API refuses localhost callback URLs and takes only https inputs; "
        "dev runs and tests turn this off (the service and its inputs are on this machine)",
    )
    # the result file (what the service copies into its own storage)
    result_url_ttl_seconds: float = Field(
        86400.0, ge=0, description="the result URL stops working this long after success"
    )
    result_expired_status: int = Field(404, ge=400, le=599)
    result_error_status: int | None = Field(
        None, ge=400, le=599, description="every download answers this status"
    )
    result_redirect: str | None = Field(
        None, description="'cdn' redirects to a second path of the simulator; any URL goes there"
    )
    result_content_type: str = "video/mp4"
    result_not_video: bool = Field(False, description="serve an HTML page instead of the video")
    result_truncate_rate: float = Field(
        0.0, ge=0, le=1, description="announce the whole file, send half, hang up"
    )
    result_pad_bytes: int = Field(
        0, ge=0, description="make the files of tasks created from now on this much larger"
    )
    result_stall_seconds: float = Field(
        0.0, ge=0, description="pause this long after the first bytes of a download"
    )
    result_hide_length: bool = Field(False, description="send no Content-Length (chunked)")
    result_wrong_resolution_rate: float = Field(
        0.0, ge=0, le=1, description="deliver the other resolution than the one asked for"
    )
    result_file: str | None = Field(
        None, description="serve this file's bytes as every result (hostile files)"
    )


INPUT_FIELDS = {"images": "image", "reference_video_urls": "video", "reference_audio_urls": "audio"}
MAX_INPUT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class InputSeen:
    field: str
    kind: str | None  # what its bytes are
    sha256: str
    size: int


def sniff(data: bytes) -> str | None:
    """What a file is by its first bytes, as an API checking its inputs would."""
    if data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio"
    if data[4:8] == b"ftyp":
        return "audio" if data[8:11] == b"M4A" else "video"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio"
    return None


@dataclass
class SimTask:
    task_id: str
    request: dict[str, Any]
    created: float
    will_fail: bool
    never_finish: bool
    video_url: str
    wrong_resolution: bool = False
    pad_bytes: int = 0  # RESULT_PAD_BYTES when the task was made
    done: bool = False  # its render time has passed: every later report is final
    inputs: list["InputSeen"] = field(default_factory=list)  # what it fetched, in order
    failure: str | None = None  # why it failed, when it was its inputs

    def finished_at(self, task_seconds: float) -> float:
        return self.created + task_seconds

    def video(self) -> bytes:
        resolution = self.request.get("resolution", "720p")
        if self.wrong_resolution:
            resolution = "480p" if resolution == "720p" else "720p"
        size = dimensions(resolution, self.request.get("aspect_ratio", "16:9"))
        return render(*size, int(self.request.get("duration", 5)))

    def status(self, task_seconds: float) -> str:
        """Final once the task is `done` (set by its run, before its callback is sent, so
        the final callback is final by construction); before that, by the clock."""
        if self.done and not self.never_finish:
            return "FAILED" if self.will_fail else "SUCCESS"
        if time.monotonic() - self.created < task_seconds / 3:
            return "PENDING"
        return "IN_PROGRESS"


@dataclass
class SimulatorState:
    config: SimulatorConfig
    rng: random.Random = field(default_factory=random.Random)
    tasks: dict[str, SimTask] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    requests_by_callback: Counter[str] = field(default_factory=Counter)
    generate_times: list[float] = field(default_factory=list)  # monotonic, per request
    status_calls_by_task: Counter[str] = field(default_factory=Counter)
    callbacks: Counter[str] = field(default_factory=Counter)
    downloads_by_task: Counter[str] = field(default_factory=Counter)
    lost_callbacks: set[str] = field(default_factory=set)
    final_callback_at: dict[str, float] = field(default_factory=dict)  # monotonic, per task
    generate_in_flight: int = 0
    max_generate_in_flight: int = 0
    rendering: int = 0  # tasks accepted whose render time has not passed
    max_rendering: int = 0
    background: set[asyncio.Task[None]] = field(default_factory=set)
    # cleared: every generate request waits, its body read, until it is set again (tests
    # cut submissions that Seedance has and has not answered)
    generates_open: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.generates_open.set()

    def reset(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.tasks.clear()
        self.calls.clear()
        self.requests_by_callback.clear()
        self.generate_times.clear()
        self.status_calls_by_task.clear()
        self.callbacks.clear()
        self.downloads_by_task.clear()
        self.lost_callbacks.clear()
        self.final_callback_at.clear()
        self.max_generate_in_flight = self.generate_in_flight
        self.max_rendering = self.rendering

    def chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def stats(self) -> dict[str, Any]:
        statuses = Counter(t.status(self.config.task_seconds) for t in self.tasks.values())
        return {
            "calls": dict(self.calls),
            "tasks": len(self.tasks),
            "task_status": dict(statuses),
            "status_calls_by_task": dict(self.status_calls_by_task),
            "callbacks": dict(self.callbacks),
            "downloads_by_task": dict(self.downloads_by_task),
            "lost_callbacks": sorted(self.lost_callbacks),
            "max_generate_in_flight": self.max_generate_in_flight,
            "rendering": self.rendering,
            "max_rendering": self.max_rendering,
            "max_requests_per_callback_url": max(self.requests_by_callback.values(), default=0),
        }


def _envelope(code: int, message: str, data: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=code)


def _holds_word(body: Any, words: list[str]) -> bool:
    prompt = body.get("prompt") if isinstance(body, dict) else None
    return isinstance(prompt, str) and any(w.lower() in prompt.lower() for w in words)


def _is_local_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        return address.is_loopback or address.is_private or address.is_link_local
    return False


def validate_generate(body: Any, config: SimulatorConfig) -> str | None:
    """The real API's checks, as docs/upstream.md describes them; returns the error message."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    model = body.get("model")
    if model not in MODELS:
        return f"unsupported model: {model!r}"
    prompt, images = body.get("prompt"), body.get("images")
    schemes = ("https://",) if config.reject_local_urls else ("https://", "http://")
    if images is not None and (
        not isinstance(images, list)
        or not 1 <= len(images) <= 4
        or not all(isinstance(u, str) and u.startswith(schemes) for u in images)
    ):
        return "images must be 1 to 4 https URLs"
    for name in ("reference_video_urls", "reference_audio_urls"):
        urls = body.get(name)
        if urls is not None and (
            not isinstance(urls, list)
            or not all(isinstance(u, str) and u.startswith(schemes) for u in urls)
        ):
            return f"{name} must be https URLs"
    if prompt is None and not images:
        return "prompt is required for text-to-video"
    if prompt is not None and (not isinstance(prompt, str) or not 1 <= len(prompt) <= 2000):
        return "prompt must be 1 to 2000 characters"
    duration = body.get("duration")
    if type(duration) is not int or duration not in MODELS[model]:
        return f"invalid duration for {model}: {duration!r}"
    if body.get("resolution", "720p") not in RESOLUTIONS:
        return "resolution must be 480p or 720p"
    ratio = body.get("aspect_ratio", "16:9")
    if ratio not in ASPECT_RATIOS or (ratio == "adaptive" and images):
        return f"invalid aspect_ratio: {ratio!r}"
    callback = body.get("callback_url")
    if callback is not None:
        if not isinstance(callback, str) or not callback.startswith(("https://", "http://")):
            return "callback_url must be an http(s) URL"
        if config.reject_local_urls and _is_local_host(callback):
            return "callback_url must be a public URL"
    return None


def create_simulator(config: SimulatorConfig | None = None) -> FastAPI:
    state = SimulatorState(config=config or SimulatorConfig())
    state.reset()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=10) as http:
            app.state.http = http
            yield
            for task in list(state.background):
                task.cancel()
            await asyncio.gather(*state.background, return_exceptions=True)

    app = FastAPI(title="Seedance v2 simulator", lifespan=lifespan)
    app.state.sim = state

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {state.config.api_key}"

    async def post_callback(url: str, payload: dict[str, Any], label: str) -> None:
        try:
            response = await app.state.http.post(url, json=payload)
            state.callbacks[f"{label}_{response.status_code}"] += 1
        except httpx.HTTPError:
            state.callbacks[f"{label}_error"] += 1

    def report(task: SimTask) -> dict[str, Any]:
        status = task.status(state.config.task_seconds)
        data: dict[str, Any] = {"task_id": task.task_id, "status": status}
        if status == "SUCCESS":
            data["response"] = [task.video_url]
        elif status == "FAILED" and _holds_word(task.request, state.config.output_refusal_words):
            data["error_message"] = (
                "OutputVideoSensitiveContentDetected: the generated video may contain "
                "sensitive content"
            )
        elif status == "FAILED" and task.failure is not None:
            data["error_message"] = task.failure
        elif status == "FAILED" and state.config.failure_quotes_prompt:
            data["error_message"] = f"refused by moderation: {task.request.get('prompt')}"
        elif status == "FAILED":
            data["error_message"] = "simulated generation failure"
        return data

    async def fetch_inputs(task: SimTask) -> str | None:
        """Download every input, as the real API does when a task starts; why the task
        fails, or None."""
        for name, kind in INPUT_FIELDS.items():
            for index, url in enumerate(task.request.get(name) or []):
                where = f"{name}[{index}]"
                try:
                    async with app.state.http.stream("GET", url) as response:
                        if response.status_code != 200:
                            return f"{where} could not be fetched: HTTP {response.status_code}"
                        data = b""
                        async for chunk in response.aiter_bytes():
                            data += chunk
                            if len(data) > MAX_INPUT_BYTES:
                                return f"{where} is larger than {MAX_INPUT_BYTES} bytes"
                except httpx.HTTPError as exc:
                    return f"{where} could not be fetched: {exc!r}"
                seen = InputSeen(name, sniff(data), hashlib.sha256(data).hexdigest(), len(data))
                task.inputs.append(seen)
                if seen.kind != kind:
                    return f"{where} is not {'an' if kind == 'image' else 'a'} {kind} file"
        return None

    async def run_task(task: SimTask, callback_url: str | None) -> None:
        config = state.config
        if (failure := await fetch_inputs(task)) is not None:
            task.failure, task.will_fail = failure, True
        await asyncio.sleep(config.task_seconds)
        task.done = True
        state.rendering -= 1
        await asyncio.sleep(config.callback_delay_seconds)
        if callback_url is None or task.never_finish:
            return
        if state.chance(config.callback_loss_rate):
            state.lost_callbacks.add(task.task_id)
            state.callbacks["lost"] += 1
            return
        final = {"code": 200, "message": "success", "data": report(task)}
        state.final_callback_at[task.task_id] = time.monotonic()
        await post_callback(callback_url, final, "final")
        if state.chance(config.callback_duplicate_rate):
            await post_callback(callback_url, final, "duplicate")
        if state.chance(config.callback_out_of_order_rate):
            stale = {"task_id": task.task_id, "status": "IN_PROGRESS"}
            await post_callback(callback_url, stale, "stale")

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        state.background.add(task)
        task.add_done_callback(state.background.discard)

    @app.post("/v2/generate")
    async def generate(request: Request) -> Response:
        state.calls["generate"] += 1
        state.generate_times.append(time.monotonic())
        state.generate_in_flight += 1
        state.max_generate_in_flight = max(state.max_generate_in_flight, state.generate_in_flight)
        try:
            return await accept_generate(request)
        finally:
            state.generate_in_flight -= 1

    async def accept_generate(request: Request) -> Response:
        config = state.config
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("callback_url"), str):
            state.requests_by_callback[body["callback_url"]] += 1
        await state.generates_open.wait()
        if config.generate_latency_seconds:
            await asyncio.sleep(config.generate_latency_seconds)
        if not authorized(request):
            return _envelope(401, "invalid api key")
        if state.chance(config.generate_5xx_rate):
            return _envelope(503, "service temporarily unavailable")
        full = (
            config.max_concurrent_tasks is not None
            and state.rendering >= config.max_concurrent_tasks
        )
        if full or state.chance(config.generate_429_rate):
            state.calls["generate_429"] += 1
            response = _envelope(
                429, "concurrency limit reached" if full else "rate limit exceeded"
            )
            if config.retry_after_seconds is not None:
                response.headers["Retry-After"] = str(config.retry_after_seconds)
            return response
        if body is None:
            return _envelope(400, "body is not valid JSON")
        if (error := validate_generate(body, config)) is not None:
            return _envelope(400, error)
        if _holds_word(body, config.input_refusal_words):
            return _envelope(
                400,
                "InputTextSensitiveContentDetected: The request failed because the input text "
                "may contain sensitive information.",
            )
        if config.credits_exhausted:
            return _envelope(402, "insufficient credits")
        task_id = f"sim-{uuid.uuid4().hex}"
        task = SimTask(
            task_id=task_id,
            request=body,
            created=time.monotonic(),
            will_fail=state.chance(config.task_failure_rate)
            or _holds_word(body, config.output_refusal_words),
            never_finish=state.chance(config.never_finish_rate),
            video_url=str(request.url_for("video", task_id=task_id)),
            wrong_resolution=state.chance(config.result_wrong_resolution_rate),
            pad_bytes=config.result_pad_bytes,
        )
        state.tasks[task_id] = task
        state.calls["generate_accepted"] += 1
        state.rendering += 1
        state.max_rendering = max(state.max_rendering, state.rendering)
        spawn(run_task(task, body.get("callback_url")))
        if state.chance(config.generate_hang_rate):
            # the task exists, but the caller gives up before hearing of it
            await asyncio.sleep(config.generate_hang_seconds)
        return _envelope(200, "success", {"task_id": task_id})

    @app.get("/v2/status")
    async def status(request: Request, task_id: str = "") -> Response:
        state.calls["status"] += 1
        if not authorized(request):
            return _envelope(401, "invalid api key")
        task = state.tasks.get(task_id)
        if task is None:
            return _envelope(404, "task not found")
        state.status_calls_by_task[task_id] += 1
        return _envelope(200, "success", report(task))

    @app.get("/files/{task_id}.mp4", name="video")
    async def video(request: Request, task_id: str) -> Response:
        state.calls["video"] += 1
        config = state.config
        task = state.tasks.get(task_id)
        if task is None or task.status(config.task_seconds) != "SUCCESS":
            return Response(status_code=404)
        state.downloads_by_task[task_id] += 1
        expires = task.finished_at(config.task_seconds) + config.result_url_ttl_seconds
        if time.monotonic() > expires:
            return Response(status_code=config.result_expired_status)
        if config.result_error_status is not None:
            return Response(status_code=config.result_error_status)
        if config.result_redirect == "cdn":
            return RedirectResponse(str(request.url_for("cdn_video", task_id=task_id)))
        if config.result_redirect is not None:
            return RedirectResponse(config.result_redirect)
        return serve_result(task)

    @app.get("/cdn/{task_id}.mp4", name="cdn_video")
    async def cdn_video(task_id: str) -> Response:
        task = state.tasks.get(task_id)
        return Response(status_code=404) if task is None else serve_result(task)

    def serve_result(task: SimTask) -> Response:
        config = state.config
        if config.result_not_video:
            return Response(b"<html><body>Access denied</body></html>", media_type="text/html")
        video = Path(config.result_file).read_bytes() if config.result_file else task.video()
        size = padded_size(video, task.pad_bytes)
        headers = {} if config.result_hide_length else {"Content-Length": str(size)}
        chunks = padded(video, task.pad_bytes)
        if state.chance(config.result_truncate_rate):
            chunks = iter([video[: len(video) // 2]])
        body: Iterator[bytes] | AsyncIterator[bytes] = chunks
        if config.result_stall_seconds:
            body = stalled(chunks, config.result_stall_seconds)
        return StreamingResponse(body, media_type=config.result_content_type, headers=headers)

    async def stalled(chunks: Iterator[bytes], seconds: float) -> AsyncIterator[bytes]:
        """Half of the first chunk, a pause, then the rest: a download under way."""
        first = next(chunks)
        yield first[: len(first) // 2]
        await asyncio.sleep(seconds)
        yield first[len(first) // 2 :]
        for chunk in chunks:
            yield chunk

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.patch("/_sim/config")
    async def update_config(changes: dict[str, Any]) -> Response:
        try:
            state.config = SimulatorConfig.model_validate({**state.config.model_dump(), **changes})
        except ValidationError as exc:
            return JSONResponse({"errors": exc.errors(include_url=False)}, status_code=400)
        return JSONResponse(state.config.model_dump())

    @app.post("/_sim/reset")
    async def reset() -> dict[str, str]:
        state.reset()
        return {"status": "reset"}

    return app
