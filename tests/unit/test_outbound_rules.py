"""The rules of outbound webhooks that need no I/O: where they may go, how they are signed,
how secrets are kept, the retry schedule."""

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.fernet import InvalidToken
from pydantic import SecretStr
from standardwebhooks import Webhook

from app.config import Settings
from app.kit.errors import ProblemError
from app.outbound.signing import SecretBox, new_secret, signature_header
from app.outbound.urls import UnsafeUrl, check_before_send, check_endpoint_url
from app.outbound.worker import retry_delay

DEV = Settings(_env_file=None)  # type: ignore[call-arg]
PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "jwt_secret": "j" * 40,
    "callback_secret": "w" * 40,
    "seedance_api_key": "live-key",
    "media_url_secret": "m" * 40,
}


def test_production_needs_its_own_outbound_secrets_key() -> None:
    with pytest.raises(ValueError, match="OUTBOUND_SECRETS_KEY"):
        Settings(_env_file=None, **PRODUCTION)  # type: ignore[arg-type]


def test_local_receivers_only_outside_production() -> None:
    production = Settings(_env_file=None, outbound_secrets_key="o" * 40, **PRODUCTION)  # type: ignore[arg-type]
    for url in ("http://127.0.0.1:9000/hook", "http://localhost:9000/hook", "http://[::1]/h"):
        assert check_endpoint_url(url, DEV) == url
        with pytest.raises(ProblemError) as refused:
            check_endpoint_url(url, production)
        assert refused.value.errors and refused.value.errors[0].field == "url"
    with pytest.raises(ProblemError):
        check_endpoint_url("http://user:pw@127.0.0.1/hook", DEV)
    with pytest.raises(ProblemError):
        check_endpoint_url("http://10.0.0.1/hook", DEV)


async def test_a_name_resolving_to_a_private_address_is_refused_at_send_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {"hooks.example.com": "10.1.2.3", "public.example.com": "93.184.215.14"}

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    with pytest.raises(UnsafeUrl, match="non-public"):
        await check_before_send("https://hooks.example.com/x", DEV)
    await check_before_send("https://public.example.com/x", DEV)


def test_every_secret_of_a_rotation_signs_and_each_verifies_alone() -> None:
    old, new = new_secret(), new_secret()
    at = datetime.now(UTC)
    header = signature_header([new, old], "msg_1", at, '{"type":"job.queued"}')
    assert len(header.split(" ")) == 2
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": header,
    }
    for secret in (old, new):
        Webhook(secret).verify('{"type":"job.queued"}', headers)


def test_secrets_are_sealed_with_the_service_key() -> None:
    box = SecretBox(SecretStr("k" * 40))
    secret = new_secret()
    sealed = box.seal(secret)
    assert secret not in sealed and box.open(sealed) == secret
    with pytest.raises(InvalidToken):
        SecretBox(SecretStr("x" * 40)).open(sealed)


def test_the_retry_schedule_is_jittered_then_spent() -> None:
    delays = [retry_delay([10, 100], attempts) for attempts in (1, 2, 3)]
    assert delays[0] is not None and 8 <= delays[0].total_seconds() <= 12
    assert delays[1] is not None and 80 <= delays[1].total_seconds() <= 120
    assert delays[2] is None
