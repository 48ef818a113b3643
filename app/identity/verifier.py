"""Verifying a bearer token: which accepted issuer made it, with which key, for whom.

The issuer is read from the token (unverified) only to choose the keys: the signature is
then checked with that issuer's key and the algorithm that key is pinned to (a JWKS key's
own `alg`, or JWT_ALGORITHM for JWT_SECRET / JWT_PUBLIC_KEY), so a token cannot pick its
algorithm (`none`, or HS256 with a public key as the secret). `iss`, `exp` and the
issuer's audience rule are always checked. Verified tokens are cached (a client sends the
same token on every request); their expiry is checked again on every use.
"""

import asyncio
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import httpx
import jwt

from app.config import JwtAlgorithm, Settings
from app.identity.claims import ClaimPath, claim, has_any
from app.identity.jwks import JwksKeys, UnknownKey
from app.identity.plans import PlanLimits, Plans
from app.kit.errors import ProblemError

MAX_SUBJECT_LENGTH = 255
# a subject is stored, compared and logged: one line of text (Postgres refuses NUL in text,
# a newline would forge a log line)
_SUBJECT = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]+")
CACHED_TOKENS = 8192


def is_subject(value: object) -> TypeGuard[str]:
    """Whether `value` can name a user: what a token's subject must be."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_SUBJECT_LENGTH
        and _SUBJECT.fullmatch(value) is not None
    )


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    plan: PlanLimits
    is_admin: bool = False


def unauthorized(detail: str, error: str = "invalid_token") -> ProblemError:
    return ProblemError(
        401,
        "unauthorized",
        detail,
        headers={"WWW-Authenticate": f'Bearer realm="seedance-bff", error="{error}"'},
    )


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    subject: ClaimPath
    admin: ClaimPath
    admin_values: list[str]
    plan: ClaimPath | None

    def principal(self, claims: dict[str, Any], plans: Plans) -> Principal:
        subject = claim(claims, self.subject)
        if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
            raise unauthorized("The bearer token's subject is invalid.")
        if not _SUBJECT.fullmatch(subject):
            raise unauthorized("The bearer token's subject holds control characters.")
        plan = plans.named(claim(claims, self.plan)) if self.plan is not None else plans.default
        is_admin = has_any(claim(claims, self.admin), self.admin_values)
        return Principal(subject, plan, is_admin=is_admin)


@dataclass
class _Issuer:
    """An accepted issuer: its keys, and its audience rule."""

    issuer: str
    audiences: list[str]
    mapping: ClaimMapping
    jwks: JwksKeys | None = None
    static: tuple[str, str] | None = None  # (key, algorithm)
    extra: dict[str, list[str]] = field(default_factory=dict)  # claim -> accepted values

    async def key(self, kid: str | None) -> tuple[Any, list[str]]:
        if self.static is not None:
            key, algorithm = self.static
            return key, [algorithm]
        assert self.jwks is not None
        jwk = await self.jwks.key(kid)
        return jwk.key, [jwk.algorithm_name]


def _issuers(settings: Settings, http: httpx.AsyncClient | None) -> dict[str, _Issuer]:
    default = ClaimMapping(
        settings.jwt_subject_claim,
        settings.jwt_admin_claim,
        settings.jwt_admin_values,
        settings.jwt_plan_claim,
    )
    primary = _Issuer(settings.jwt_issuer, [settings.jwt_audience], default)
    if settings.jwt_jwks_url or settings.jwt_oidc_discovery:
        assert http is not None
        primary.jwks = JwksKeys(http, settings.jwt_issuer, settings.jwt_jwks_url, settings)
    elif settings.jwt_algorithm is JwtAlgorithm.RS256:
        assert settings.jwt_public_key is not None  # enforced by Settings
        primary.static = (settings.jwt_public_key, JwtAlgorithm.RS256.value)
    else:
        primary.static = (settings.jwt_secret.get_secret_value(), JwtAlgorithm.HS256.value)
    issuers = {primary.issuer: primary}
    for rules in settings.jwt_issuers:
        assert http is not None
        mapping = ClaimMapping(
            rules.subject_claim or default.subject,
            rules.admin_claim or default.admin,
            rules.admin_values or default.admin_values,
            rules.plan_claim or default.plan,
        )
        issuers[rules.issuer] = _Issuer(
            rules.issuer,
            rules.audiences,
            mapping,
            jwks=JwksKeys(http, rules.issuer, rules.jwks_url, settings),
            extra={
                name: values
                for name, values in (
                    ("azp", rules.authorized_parties),
                    ("client_id", rules.client_ids),
                )
                if values
            },
        )
    return issuers


class TokenVerifier:
    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._issuers = _issuers(settings, http)
        self.plans = Plans(settings)
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def prefetch(self) -> asyncio.Task[None]:
        """Fetch every provider's keys in the background (startup does not wait for them)."""

        async def fetch_all() -> None:
            await asyncio.gather(
                *(i.jwks.refresh() for i in self._issuers.values() if i.jwks is not None)
            )

        return asyncio.create_task(fetch_all(), name="jwks-prefetch")

    async def verify(self, token: str) -> Principal:
        leeway = self._settings.jwt_leeway_seconds
        cached = self._verified.get(token)
        if cached is None:
            cached = await self._verify(token)
            self._verified[token] = cached
            if len(self._verified) > CACHED_TOKENS:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        principal, expires_at = cached
        if time.time() > expires_at + leeway:
            raise unauthorized("The bearer token has expired.")
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.InvalidTokenError, TypeError, ValueError) as exc:
            raise unauthorized("The bearer token is invalid.") from exc
        claimed = unverified.get("iss") if isinstance(unverified, dict) else None
        issuer = self._issuers.get(claimed) if isinstance(claimed, str) else None
        if issuer is None:
            raise unauthorized("The bearer token's issuer is not accepted.")
        try:
            key, algorithms = await issuer.key(kid if isinstance(kid, str) else None)
        except UnknownKey as exc:
            raise unauthorized("The bearer token's signing key is unknown.") from exc
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=issuer.audiences or None,
                issuer=issuer.issuer,
                leeway=self._settings.jwt_leeway_seconds,
                options={
                    "require": ["exp", "iss"] + (["aud"] if issuer.audiences else []),
                    "verify_aud": bool(issuer.audiences),
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("The bearer token has expired.") from exc
        except (jwt.InvalidTokenError, TypeError, ValueError) as exc:
            raise unauthorized("The bearer token is invalid.") from exc
        for name, accepted in issuer.extra.items():
            if claims.get(name) not in accepted:
                raise unauthorized(f"The bearer token's `{name}` is not accepted.")
        return issuer.mapping.principal(claims, self.plans), float(claims["exp"])
