"""Tokens of real identity providers: keys published as JWKS by a local server (keys made
by the test), two providers with different audience rules, a key rotation, a flood of
forged `kid`s, the provider down, and algorithm tricks."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import FastAPI, Response
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from testkit.harness import Stack, running_stack, serve, wait_until
from tests.unit.test_auth import _hs256_with

AUDIENCE = "https://api.example.com"
APP_ORIGIN = "https://app.example.com"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        to_jwk = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}
        data: dict[str, Any] = to_jwk[self.algorithm].to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed_key(kid: str) -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


@dataclass
class Provider:
    """An identity provider's published documents, served over HTTP by `provider_server`."""

    issuer: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    up: bool = True
    hang: bool = False
    cache_control: str = "public, max-age=3600"
    fetches: int = 0

    def token(self, key: SigningKey, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "sub": "user-1", "iat": now, "exp": now + 600, **claims}
        return jwt.encode(body, key.private, algorithm=key.algorithm, headers={"kid": key.kid})

    def app(self) -> FastAPI:
        app = FastAPI()

        async def answer(document: dict[str, Any]) -> Response:
            if self.hang:
                await asyncio.sleep(3600)
            if not self.up:
                return Response(status_code=503)
            return Response(
                httpx.Response(200, json=document).content,
                media_type="application/json",
                headers={"Cache-Control": self.cache_control},
            )

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> Response:
            return await answer({"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks"})

        @app.get("/jwks")
        async def jwks() -> Response:
            self.fetches += 1
            return await answer({"keys": [key.jwk() for key in self.keys]})

        return app


@asynccontextmanager
async def provider_server(provider: Provider) -> AsyncIterator[str]:
    async with serve(provider.app()) as url:
        provider.issuer = url
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def reads(stack: Stack, token: str) -> int:
    return (await stack.http.get("/jobs", headers=bearer(token))).status_code


@asynccontextmanager
async def two_providers(
    database_url: str, cache_control: str = "public, max-age=3600", **overrides: Any
) -> AsyncIterator[tuple[Stack, Provider, Provider]]:
    """Provider A (OIDC discovery, `aud` checked: Auth0-like) and provider B (a JWKS URL,
    `azp` checked, no `aud`: Clerk-like)."""
    a = Provider(keys=[rsa_key("a-1")], cache_control=cache_control)
    b = Provider(keys=[ec_key("b-1"), ed_key("b-2")])
    async with provider_server(a) as a_url, provider_server(b) as b_url:
        issuers = [
            {"issuer": a_url, "discovery": True, "audiences": [AUDIENCE]},
            {
                "issuer": b_url,
                "jwks_url": f"{b_url}/jwks",
                "authorized_parties": [APP_ORIGIN],
                "admin_claim": ["metadata", "role"],  # its own claim mapping
            },
        ]
        async with running_stack(database_url, jwt_issuers=issuers, **overrides) as stack:
            yield stack, a, b


async def test_tokens_of_two_providers_each_by_its_own_rules(database_url: str) -> None:
    async with two_providers(database_url, jwt_admin_claim=["realm_access", "roles"]) as (
        stack,
        a,
        b,
    ):
        alice = a.token(a.keys[0], aud=AUDIENCE, sub="auth0|alice")
        created = await stack.http.post("/jobs", json={"prompt": "a heron"}, headers=bearer(alice))
        assert created.status_code == 202, created.text
        bob_es256 = b.token(b.keys[0], azp=APP_ORIGIN, sid="sess_1", sub="user_bob")
        bob_eddsa = b.token(b.keys[1], azp=APP_ORIGIN, sub="user_bob")
        assert await reads(stack, bob_es256) == 200 and await reads(stack, bob_eddsa) == 200
        mine = (await stack.http.get("/jobs", headers=bearer(bob_es256))).json()["items"]
        assert mine == []  # providers' users are users like any other: bob sees none of alice's
        refused = {
            "A without aud": a.token(a.keys[0]),
            "A for another API": a.token(a.keys[0], aud="https://other.example.com"),
            "B from another origin": b.token(b.keys[0], azp="https://evil.example.com"),
            "B without azp": b.token(b.keys[0]),
            "B's key under A's name": jwt.encode(
                {"iss": a.issuer, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
                b.keys[0].private,
                algorithm="ES256",
                headers={"kid": "b-1"},
            ),
            "an unknown issuer": jwt.encode(
                {"iss": "https://evil.example.com", "sub": "x", "exp": int(time.time()) + 60},
                a.keys[0].private,
                algorithm="RS256",
                headers={"kid": "a-1"},
            ),
        }
        for name, token in refused.items():
            response = await stack.http.get("/jobs", headers=bearer(token))
            assert (response.status_code, response.json()["code"]) == (401, "unauthorized"), name
        # claim mapping: Keycloak's nested realm roles make an admin
        admin = a.token(a.keys[0], aud=AUDIENCE, realm_access={"roles": ["admin", "user"]})
        assert (await stack.http.get("/admin/stats", headers=bearer(admin))).status_code == 200
        assert (await stack.http.get("/admin/stats", headers=bearer(alice))).status_code == 403
        # B maps its own admin claim (Clerk-like session metadata), not A's
        b_admin = b.token(b.keys[0], azp=APP_ORIGIN, metadata={"role": "admin"})
        b_realm = b.token(b.keys[0], azp=APP_ORIGIN, realm_access={"roles": ["admin"]})
        assert (await stack.http.get("/admin/stats", headers=bearer(b_admin))).status_code == 200
        assert (await stack.http.get("/admin/stats", headers=bearer(b_realm))).status_code == 403


async def test_algorithm_tricks_are_refused(database_url: str) -> None:
    async with two_providers(database_url) as (stack, a, _b):
        claims = {"iss": a.issuer, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60}
        confused = _hs256_with(a.keys[0].public_pem(), claims)  # the public key as HMAC secret
        unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "a-1"})
        for token in (confused, unsigned):
            assert await reads(stack, token) == 401


async def test_a_rotated_key_verifies_without_a_restart(database_url: str) -> None:
    async with two_providers(database_url, jwks_refetch_seconds=0.2) as (stack, a, _b):
        old = a.token(a.keys[0], aud=AUDIENCE)
        assert await reads(stack, old) == 200
        a.keys = [rsa_key("a-2"), a.keys[0]]  # the provider publishes a new key, signs with it
        new = a.token(a.keys[0], aud=AUDIENCE)

        async def accepted() -> bool:
            return await reads(stack, new) == 200

        await wait_until(accepted)  # at most one refetch per JWKS_REFETCH_SECONDS
        a.keys = a.keys[:1]  # the old key retired
        assert await reads(stack, new) == 200


async def test_a_key_rotated_right_after_start_up_is_honoured_at_once(database_url: str) -> None:
    """The provider rotates just after the service fetched its keys at start-up: a token
    signed with the new key verifies on its first request (it was refused for up to
    JWKS_REFETCH_SECONDS, counted from the start-up fetch)."""
    async with two_providers(database_url, jwks_refetch_seconds=300) as (stack, a, _b):
        assert await reads(stack, a.token(a.keys[0], aud=AUDIENCE)) == 200
        a.keys = [rsa_key("a-2"), a.keys[0]]
        assert await reads(stack, a.token(a.keys[0], aud=AUDIENCE)) == 200


async def test_a_flood_of_forged_kids_costs_at_most_one_fetch(database_url: str) -> None:
    async with two_providers(database_url) as (stack, a, _b):
        assert await reads(stack, a.token(a.keys[0], aud=AUDIENCE)) == 200
        fetched = a.fetches
        forger = rsa_key("unused")
        statuses = set()
        for _ in range(1000):
            forged = a.token(SigningKey(uuid.uuid4().hex, "RS256", forger.private), aud=AUDIENCE)
            statuses.add(await reads(stack, forged))
        assert statuses == {401}
        assert a.fetches - fetched <= 1  # JWKS_REFETCH_SECONDS (10 s) did not pass


async def test_the_provider_down(database_url: str) -> None:
    # keys fetched while it was up keep verifying once it is down, past their freshness
    async with two_providers(
        database_url,
        cache_control="no-store",  # fresh for JWKS_CACHE_SECONDS
        jwks_cache_seconds=0.1,
        jwks_failure_backoff_seconds=0.1,
    ) as (stack, a, _b):
        token = a.token(a.keys[0], aud=AUDIENCE)
        assert await reads(stack, token) == 200
        a.up = False
        fetched = a.fetches
        for _ in range(5):
            await asyncio.sleep(0.15)  # past the freshness and the backoff: a refetch fails
            fresh = a.token(a.keys[0], aud=AUDIENCE, jti=uuid.uuid4().hex)  # not yet verified
            assert await reads(stack, fresh) == 200
        assert a.fetches > fetched  # it was asked, and failed
    # a fresh process whose provider answers errors, or never answers: 503, not a hang
    for mode in ("up", "hang"):
        provider = Provider(keys=[rsa_key("a-1")], up=False, hang=mode == "hang")
        async with provider_server(provider) as url:
            issuers = [{"issuer": url, "jwks_url": f"{url}/jwks", "audiences": [AUDIENCE]}]
            async with running_stack(
                database_url,
                jwt_issuers=issuers,
                jwks_fetch_timeout_seconds=0.5,
                jwks_failure_backoff_seconds=0.5,
            ) as stack:
                token = provider.token(provider.keys[0], aud=AUDIENCE)
                response = await stack.http.get("/jobs", headers=bearer(token))
                assert response.status_code == 503, mode
                assert response.json()["code"] == "identity_provider_unavailable"
                assert int(response.headers["retry-after"]) >= 1
                provider.up, provider.hang = True, False

                async def recovered(stack: Stack = stack, token: str = token) -> bool:
                    return await reads(stack, token) == 200

                await wait_until(recovered)  # after the failure backoff


async def test_the_primary_issuer_from_oidc_discovery(database_url: str) -> None:
    """JWT_ISSUER's keys found through its OpenID configuration (JWT_OIDC_DISCOVERY), with
    JWT_AUDIENCE checked, next to nothing else."""
    provider = Provider(keys=[ec_key("k-1")])
    async with provider_server(provider) as url:
        async with running_stack(
            database_url, jwt_issuer=url, jwt_audience=AUDIENCE, jwt_oidc_discovery=True
        ) as stack:
            assert await reads(stack, provider.token(provider.keys[0], aud=AUDIENCE)) == 200
            assert await reads(stack, provider.token(provider.keys[0], aud="other")) == 401
