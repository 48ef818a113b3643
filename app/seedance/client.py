"""Async adapter for the Seedance v2 API (see docs/upstream.md).

Everything upstream-shaped lives here: request bodies, the tolerated response variants,
and the mapping of upstream failures to typed errors. Retries (tenacity, exponential
backoff with jitter, honouring Retry-After) cover only failures where the request
certainly created nothing upstream: connection errors, 5xx, and 429 on status calls (a
429 on generate means the account is full: the dispatcher's queue handles it). A `generate` call
that may have reached Seedance (a timeout after sending) raises `OutcomeUnknown` and is
never repeated, because repeating it could pay for the same video twice.
"""

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.config import Settings
from app.ops.metrics import UPSTREAM_CALLS

logger = logging.getLogger(__name__)
MAX_DETAIL_CHARS = 500


class SeedanceError(Exception):
    """Base of every upstream failure; `code` is the stable code a failed job carries."""

    code = "upstream_error"

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail[:MAX_DETAIL_CHARS]
        self.status = status


class UpstreamRejected(SeedanceError):
    """400: Seedance refused the parameters (our validation should have caught it)."""

    code = "upstream_rejected"


class ContentRefused(UpstreamRejected):
    """Seedance refused the content itself (a sensitive-content family): never retried,
    the user's doing, not a fault."""

    code = "content_policy"

    def __init__(self, detail: str, status: int | None, stage: "RefusalStage") -> None:
        super().__init__(detail, status)
        self.stage = stage


class InsufficientCredits(SeedanceError):
    """402: the account is out of credits; retrying cannot help."""

    code = "insufficient_credits"


class UpstreamAuthError(SeedanceError):
    """401/403: our key is wrong or disabled; an operator must act."""

    code = "upstream_auth"


class UpstreamNotFound(SeedanceError):
    """404 on status: upstream does not know a task id we recorded."""

    code = "upstream_not_found"


class UpstreamRateLimited(SeedanceError):
    """429: back off for `retry_after` seconds when given."""

    code = "upstream_rate_limited"

    def __init__(self, detail: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail, status)
        self.retry_after = retry_after


class UpstreamTransient(SeedanceError):
    """5xx, connection failures, read timeouts on idempotent calls: worth retrying."""

    code = "upstream_unavailable"


class OutcomeUnknown(SeedanceError):
    """The generate request may have reached Seedance; only its callback can tell."""

    code = "upstream_outcome_unknown"


class UpstreamProtocolError(SeedanceError):
    """A response we cannot read (not JSON, no task id...)."""

    code = "upstream_protocol"


_RETRYABLE = (UpstreamRateLimited, UpstreamTransient)


class RefusalStage(StrEnum):
    INPUT = "input"  # the prompt or an input file
    OUTPUT = "output"  # the rendered video or audio


# the sensitive-content families (docs/upstream.md): their names are not published in one
# place, so any code or message holding a family's stem counts; Output* names the output
_REFUSAL = re.compile(r"(\w*?)(SensitiveContentDetected|RiskDetection)", re.IGNORECASE)


def refusal_stage(text: str | None) -> RefusalStage | None:
    """The stage a sensitive-content refusal names, or None when `text` is none."""
    match = _REFUSAL.search(text or "")
    if match is None:
        return None
    return RefusalStage.OUTPUT if match[1].lower().startswith("output") else RefusalStage.INPUT


class TaskState(StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_SUCCESS_VALUES = frozenset({"SUCCESS", "SUCCEEDED", "COMPLETED"})
_FAILURE_VALUES = frozenset({"FAILED", "FAILURE", "ERROR"})


@dataclass(frozen=True, slots=True)
class TaskReport:
    """What Seedance says about one task, from a status response or a callback."""

    task_id: str
    state: TaskState
    video_url: str | None = None
    error: str | None = None
    raw_status: str = ""

    @property
    def refusal(self) -> RefusalStage | None:
        """A failure that is Seedance refusing the content, at input or output."""
        return refusal_stage(self.error) if self.state is TaskState.FAILED else None


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    model: str
    prompt: str | None
    duration: int
    resolution: str
    aspect_ratio: str
    images: list[str]
    reference_video_urls: list[str]
    reference_audio_urls: list[str]
    callback_url: str

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "duration": self.duration,
            "resolution": self.resolution,
            "aspect_ratio": self.aspect_ratio,
            "callback_url": self.callback_url,
        }
        optional = {
            "prompt": self.prompt,
            "images": self.images,
            "reference_video_urls": self.reference_video_urls,
            "reference_audio_urls": self.reference_audio_urls,
        }
        body.update({k: v for k, v in optional.items() if v})
        return body


def _unwrap(payload: Any) -> dict[str, Any]:
    """Accept `{"code", "message", "data": {...}}` envelopes and bare objects alike."""
    if not isinstance(payload, dict):
        raise UpstreamProtocolError("the response is not a JSON object")
    data = payload.get("data")
    return data if isinstance(data, dict) else payload


def _error_text(data: dict[str, Any]) -> str | None:
    for key in ("error_message", "error", "message"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value[:MAX_DETAIL_CHARS]
    return None


def parse_task_report(payload: Any) -> TaskReport:
    """Read a status response or callback body in any of the observed shapes."""
    data = _unwrap(payload)
    task_id = data.get("task_id")
    raw_status = data.get("status")
    if not isinstance(task_id, str) or not task_id or len(task_id) > 128:
        raise UpstreamProtocolError("the report has no valid task_id")
    if not isinstance(raw_status, str) or not raw_status:
        raise UpstreamProtocolError("the report has no status")
    status = raw_status.strip().upper()
    if status in _SUCCESS_VALUES:
        response = data.get("response")
        video_url = response[0] if isinstance(response, list) and response else response
        if not isinstance(video_url, str) or not video_url.startswith(("https://", "http://")):
            raise UpstreamProtocolError("a successful report has no video URL")
        return TaskReport(task_id, TaskState.SUCCEEDED, video_url=video_url, raw_status=status)
    if status in _FAILURE_VALUES:
        error = _error_text(data) or "the task failed upstream"
        return TaskReport(task_id, TaskState.FAILED, error=error, raw_status=status)
    return TaskReport(task_id, TaskState.IN_PROGRESS, raw_status=status)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_for_status(status: int, detail: str, retry_after: float | None) -> SeedanceError:
    if status == 400 or status == 422:
        if (stage := refusal_stage(detail)) is not None:  # before the generic 400 row
            return ContentRefused(detail, status, stage)
        return UpstreamRejected(detail, status)
    if status == 402:
        return InsufficientCredits(detail, status)
    if status in (401, 403):
        return UpstreamAuthError(detail, status)
    if status == 404:
        return UpstreamNotFound(detail, status)
    if status == 429:
        return UpstreamRateLimited(detail, status, retry_after)
    if status >= 500 or status == 408:
        return UpstreamTransient(detail, status)
    return UpstreamProtocolError(detail, status)


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _check(response: httpx.Response) -> Any:
    """Return the JSON body of a 2xx response, or raise the typed error it stands for."""
    payload = _decode(response)
    if response.is_success:
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("the response is not a JSON object", response.status_code)
        code = payload.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and code != 200:
            # an error reported in the body of an HTTP 200
            raise _error_for_status(code, _error_text(payload) or f"upstream code {code}", None)
        return payload
    text = _error_text(payload) if isinstance(payload, dict) else None
    raise _error_for_status(
        response.status_code,
        text or f"HTTP {response.status_code} from Seedance",
        _retry_after(response),
    )


class SeedanceClient:
    """One per process, around the lifespan's shared `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._http = http
        self._settings = settings
        self._backoff = wait_exponential_jitter(
            multiplier=settings.seedance_backoff_initial, max=settings.seedance_backoff_max
        )

    @staticmethod
    def create_http_client(settings: Settings, **kwargs: Any) -> httpx.AsyncClient:
        """The shared client: base URL, bearer key and explicit timeouts."""
        return httpx.AsyncClient(
            base_url=settings.seedance_base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {settings.seedance_api_key.get_secret_value()}"},
            timeout=httpx.Timeout(
                settings.seedance_read_timeout, connect=settings.seedance_connect_timeout
            ),
            **kwargs,
        )

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, UpstreamRateLimited) and error.retry_after is not None:
            return max(backoff, min(error.retry_after, self._settings.seedance_backoff_max))
        return backoff

    async def _call(
        self,
        endpoint: str,
        request: httpx.Request,
        *,
        idempotent: bool,
        retry_on: tuple[type[SeedanceError], ...] = _RETRYABLE,
    ) -> Any:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(retry_on),
            stop=stop_after_attempt(self._settings.seedance_max_attempts),
            wait=self._wait,
            reraise=True,
        ):
            with attempt:
                return await self._send_once(endpoint, request, idempotent=idempotent)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _send_once(self, endpoint: str, request: httpx.Request, *, idempotent: bool) -> Any:
        try:
            response = await self._http.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            UPSTREAM_CALLS.labels(endpoint, "connect_error").inc()
            raise UpstreamTransient(f"cannot reach Seedance: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            UPSTREAM_CALLS.labels(endpoint, "transport_error").inc()
            if idempotent:
                raise UpstreamTransient(f"Seedance did not answer: {type(exc).__name__}") from exc
            raise OutcomeUnknown(f"Seedance did not answer: {type(exc).__name__}") from exc
        UPSTREAM_CALLS.labels(endpoint, str(response.status_code)).inc()
        return _check(response)

    async def generate(self, job: GenerateRequest) -> str:
        """Create an upstream task; returns its task id. A 429 is raised at once, never
        retried here: the account is full, and the dispatcher's queue waits for a slot."""
        request = self._http.build_request("POST", "generate", json=job.to_json())
        payload = await self._call(
            "generate", request, idempotent=False, retry_on=(UpstreamTransient,)
        )
        task_id = _unwrap(payload).get("task_id") or payload.get("task_id")  # both are seen
        if not isinstance(task_id, str) or not task_id or len(task_id) > 128:
            raise OutcomeUnknown("Seedance accepted the request but returned no task id")
        return task_id

    async def status(self, task_id: str) -> TaskReport:
        """Ask Seedance where a task stands (the source of truth when in doubt)."""
        request = self._http.build_request("GET", "status", params={"task_id": task_id})
        report = parse_task_report(await self._call("status", request, idempotent=True))
        if report.task_id != task_id:
            raise UpstreamProtocolError("the status response names another task")
        return report
