"""One attempt at delivering a message: check the URL, sign, POST, keep the answer's start.

The whole attempt (DNS check, connect, request, the first KB of the answer) runs under
one deadline, so a receiver that accepts and never answers, or answers a byte a minute,
costs OUTBOUND_TIMEOUT_SECONDS and no more. Redirects are not followed: a 3xx is a failed
attempt (a receiver's redirect could point anywhere, 10.0.0.1 included).
"""

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import httpx

from app.config import Settings
from app.outbound.signing import signature_header
from app.outbound.states import AttemptResult
from app.outbound.urls import UnsafeUrl, check_before_send

RESPONSE_BODY_BYTES = 1024
USER_AGENT = "seedance-bff-webhooks/1"


@dataclass(frozen=True, slots=True)
class Outcome:
    result: AttemptResult
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    latency_ms: float = 0.0


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=settings.outbound_timeout_seconds,
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment: the URL checks must hold
        headers={"user-agent": USER_AGENT},
        limits=httpx.Limits(max_connections=settings.outbound_concurrency),
    )


async def _head_of(response: httpx.Response) -> str:
    """The first KB of the receiver's answer, as text any database stores: bytes that are
    not UTF-8, and NUL (which Postgres text refuses), become U+FFFD."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= RESPONSE_BODY_BYTES:
            break
    return body[:RESPONSE_BODY_BYTES].decode(errors="replace").replace("\x00", "\ufffd")


def _outcome(status: int, is_redirect: bool, head: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome(AttemptResult.DELIVERED, status, response_body=head)
    error = f"answered {status}"
    if is_redirect:
        error += " (redirects are not followed)"
    return Outcome(AttemptResult.HTTP_ERROR, status, error, head)


async def send(
    http: httpx.AsyncClient,
    url: str,
    msg_id: str,
    body: str,
    secrets: list[str],
    settings: Settings,
) -> Outcome:
    """Deliver once; never raises for what the receiver or the network does."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.outbound_timeout_seconds):
            await check_before_send(url, settings)
            now = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature_header(secrets, msg_id, now, body),
            }
            async with http.stream("POST", url, content=body.encode(), headers=headers) as answer:
                outcome = _outcome(answer.status_code, answer.is_redirect, await _head_of(answer))
    except UnsafeUrl as exc:
        outcome = Outcome(AttemptResult.UNSAFE_URL, error=f"refused: {exc}")
    except (TimeoutError, httpx.TimeoutException):
        deadline = settings.outbound_timeout_seconds
        outcome = Outcome(AttemptResult.TIMEOUT, error=f"no complete answer within {deadline}s")
    except (httpx.TransportError, OSError) as exc:
        outcome = Outcome(AttemptResult.NETWORK_ERROR, error=type(exc).__name__)
    return replace(outcome, latency_ms=(time.perf_counter() - started) * 1000)
