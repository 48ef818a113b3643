"""Verified tokens are cached, but the cache never outlives a token or crosses secrets."""

import time

import pytest

from app import auth
from app.config import Settings
from app.errors import ProblemError

SETTINGS = Settings(_env_file=None, jwt_leeway_seconds=5)  # type: ignore[call-arg]
OTHER = Settings(_env_file=None, jwt_secret="another-jwt-secret-" + "z" * 24)  # type: ignore[call-arg]


def test_a_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = auth.issue_token(SETTINGS, "alice", ttl=60)
    assert auth.verify_token(SETTINGS, token).subject == "alice"  # verified, now cached
    later = time.time() + 60 + 5 + 1
    monkeypatch.setattr(auth.time, "time", lambda: later)
    with pytest.raises(ProblemError) as refused:
        auth.verify_token(SETTINGS, token)
    assert (refused.value.status, refused.value.detail) == (401, "The bearer token has expired.")


def test_the_cache_is_keyed_by_the_verification_key() -> None:
    token = auth.issue_token(SETTINGS, "alice")
    assert auth.verify_token(SETTINGS, token).subject == "alice"
    with pytest.raises(ProblemError):
        auth.verify_token(OTHER, token)  # cached under one secret, still refused under another


def test_admin_role_survives_the_cache() -> None:
    token = auth.issue_token(SETTINGS, "ops", admin=True)
    assert auth.verify_token(SETTINGS, token).is_admin
    assert auth.verify_token(SETTINGS, token).is_admin
