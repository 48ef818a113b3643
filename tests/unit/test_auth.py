"""Bearer tokens with a static key: RS256 with an identity provider's public key (and no
algorithm confusion); verified tokens are cached, but the cache never outlives a token or
crosses secrets. (Keys from a JWKS: tests/integration/test_identity_providers.py.)"""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import Settings
from app.identity import tokens
from app.identity import verifier as verifier_module
from app.identity.verifier import TokenVerifier
from app.kit.errors import ProblemError

SETTINGS = Settings(_env_file=None, jwt_leeway_seconds=5)  # type: ignore[call-arg]
OTHER = Settings(_env_file=None, jwt_secret="another-jwt-secret-" + "z" * 24)  # type: ignore[call-arg]


async def test_a_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = tokens.issue_token(SETTINGS, "alice", ttl=60)
    verifier = TokenVerifier(SETTINGS)
    assert (await verifier.verify(token)).subject == "alice"  # verified, now cached
    later = time.time() + 60 + 5 + 1
    monkeypatch.setattr(verifier_module.time, "time", lambda: later)
    with pytest.raises(ProblemError) as refused:
        await verifier.verify(token)
    assert (refused.value.status, refused.value.detail) == (401, "The bearer token has expired.")


async def test_the_cache_is_the_verifiers_own() -> None:
    token = tokens.issue_token(SETTINGS, "alice")
    assert (await TokenVerifier(SETTINGS).verify(token)).subject == "alice"
    with pytest.raises(ProblemError):
        await TokenVerifier(OTHER).verify(token)  # verified under one secret, not another


async def test_admin_role_survives_the_cache() -> None:
    token = tokens.issue_token(SETTINGS, "ops", admin=True)
    verifier = TokenVerifier(SETTINGS)
    assert (await verifier.verify(token)).is_admin
    assert (await verifier.verify(token)).is_admin


def _rsa_pair() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


async def test_rs256_tokens_from_the_identity_provider() -> None:
    private, public = _rsa_pair()
    other_private, _ = _rsa_pair()
    settings = Settings(_env_file=None, jwt_algorithm="RS256", jwt_public_key=public)  # type: ignore[call-arg]
    claims = {
        "sub": "carol",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "exp": int(time.time()) + 60,
    }
    verifier = TokenVerifier(settings)
    token = jwt.encode(claims, private, algorithm="RS256")
    assert (await verifier.verify(token)).subject == "carol"
    forged = [
        jwt.encode(claims, other_private, algorithm="RS256"),  # another key
        _hs256_with(public, claims),  # algorithm confusion: the public key as an HMAC secret
        jwt.encode(claims, None, algorithm="none"),
    ]
    for token in forged:
        with pytest.raises(ProblemError) as refused:
            await verifier.verify(token)
        assert refused.value.status == 401
    with pytest.raises(ValueError, match="HS256"):
        tokens.issue_token(settings, "carol")  # only an IdP mints RS256 tokens


def _hs256_with(secret: str, claims: dict[str, object]) -> str:
    """An HS256 token keyed with `secret` (PyJWT refuses PEM keys as HMAC secrets, so
    the token is put together by hand, as an attacker would)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{b64(signature.digest())}"


@pytest.mark.parametrize("subject", ["bad\x00sub", "alice\nINFO forged", "tab\there", "\u2028"])
async def test_a_signed_token_whose_subject_holds_control_characters_is_a_401(
    subject: str,
) -> None:
    """Validly signed, but its subject would break what stores and logs it (a NUL was a
    500 from Postgres; a newline forged a log line)."""
    token = tokens.issue_token(SETTINGS, subject)
    with pytest.raises(ProblemError) as refused:
        await TokenVerifier(SETTINGS).verify(token)
    assert refused.value.status == 401
    assert refused.value.detail == "The bearer token's subject holds control characters."
