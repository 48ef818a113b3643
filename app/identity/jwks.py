"""An identity provider's signing keys (a JWKS document), fetched with the service's async
client and kept in memory.

PyJWT's `PyJWKClient` fetches with urllib, which would block the event loop; here the
fetch is httpx's, and PyJWT only parses (`PyJWKSet`). The rules, those of maintained
verifiers:
* keys are fresh for the provider's `Cache-Control: max-age` (bounded to 1 min..24 h),
  else JWKS_CACHE_SECONDS;
* a token naming an unknown `kid` refetches the keys at most once per
  JWKS_REFETCH_SECONDS counted from the last such refetch (not from any fetch: a key
  rotated just after the start-up fetch is honoured at once), so a flood of forged `kid`s
  is one fetch per window, not a flood of fetches; concurrent misses share one fetch;
* a failed fetch is not retried for JWKS_FAILURE_BACKOFF_SECONDS, and meanwhile the keys
  already held keep verifying, up to JWKS_STALE_SECONDS after they were fetched;
* with no key at all (a fresh process, the provider down) tokens get a 503, at once.
Only asymmetric keys meant for signatures are kept: a symmetric (`oct`) key in a JWKS
would let anyone who can read the document sign tokens.
"""

import asyncio
import logging
import re
import time

import httpx
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKSetError, PyJWTError

from app.config import Settings
from app.kit.errors import ProblemError

logger = logging.getLogger(__name__)

SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MIN_MAX_AGE, MAX_MAX_AGE = 60.0, 86400.0
_MAX_AGE = re.compile(r"max-age=(\d+)")


class UnknownKey(Exception):
    """The token names a key the provider does not publish."""


def keys_unavailable(issuer: str, retry_after: float) -> ProblemError:
    return ProblemError(
        503,
        "identity_provider_unavailable",
        f"The signing keys of {issuer} cannot be fetched right now; retry shortly.",
        headers={"Retry-After": str(max(1, round(retry_after)))},
    )


def _max_age(response: httpx.Response, default: float) -> float:
    match = _MAX_AGE.search(response.headers.get("cache-control", ""))
    if match is None:
        return default
    return min(max(float(match.group(1)), MIN_MAX_AGE), MAX_MAX_AGE)


def _signing_keys(document: object) -> dict[str | None, PyJWK]:
    keys = PyJWKSet.from_dict(document).keys  # type: ignore[arg-type]  # raises if none usable
    usable = {
        key.key_id: key
        for key in keys
        if key.algorithm_name in SIGNING_ALGORITHMS and key.public_key_use in (None, "sig")
    }
    if not usable:
        raise PyJWKSetError("no asymmetric signing key in the JWKS")
    return usable


class JwksKeys:
    def __init__(
        self, http: httpx.AsyncClient, issuer: str, jwks_url: str | None, settings: Settings
    ) -> None:
        self._http = http
        self._issuer = issuer
        self._jwks_url = jwks_url  # None: discovered from the issuer
        self._settings = settings
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at = -float("inf")  # monotonic
        self._fresh_until = -float("inf")
        self._retry_at = -float("inf")  # after a failed fetch
        self._unknown_refetch_at = -float("inf")  # the last refetch for an unknown `kid`
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> PyJWK:
        """The key `kid` names (or the only key, for a token without `kid`)."""
        now = time.monotonic()
        if now >= self._fresh_until:  # due anyway (no keys yet, or their freshness ended)
            await self.refresh()
            now = time.monotonic()
        elif (
            self._lookup(kid, now) is None
            and now - self._unknown_refetch_at >= self._settings.jwks_refetch_seconds
        ):
            self._unknown_refetch_at = now
            await self.refresh()
            now = time.monotonic()
        key = self._lookup(kid, now)
        if key is not None:
            return key
        if not self._usable(now):
            raise keys_unavailable(self._issuer, self._retry_at - now)
        raise UnknownKey(kid)

    def _usable(self, now: float) -> bool:
        return bool(self._keys) and now - self._fetched_at <= max(
            self._settings.jwks_stale_seconds, self._fresh_until - self._fetched_at
        )

    def _lookup(self, kid: str | None, now: float) -> PyJWK | None:
        if not self._usable(now):
            return None
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the keys, unless a fetch is under way (then wait for it) or failed lately."""
        asked_at = time.monotonic()
        async with self._lock:
            now = time.monotonic()
            if self._fetched_at >= asked_at or now < self._retry_at:
                return  # another task just fetched, or the provider failed a moment ago
            try:
                url = self._jwks_url or await self._discover()
                response = await self._http.get(url)
                response.raise_for_status()
                self._keys = _signing_keys(response.json())
            except (
                httpx.HTTPError,
                ValueError,
                LookupError,
                TypeError,
                AttributeError,
                PyJWTError,
            ) as exc:
                self._retry_at = time.monotonic() + self._settings.jwks_failure_backoff_seconds
                logger.warning(
                    "the keys of %s could not be fetched: %s", self._issuer, type(exc).__name__
                )
                return
            self._jwks_url = url
            self._fetched_at = time.monotonic()
            self._fresh_until = self._fetched_at + _max_age(
                response, self._settings.jwks_cache_seconds
            )

    async def _discover(self) -> str:
        """The `jwks_uri` of the issuer's OpenID configuration."""
        url = f"{self._issuer.rstrip('/')}/.well-known/openid-configuration"
        response = await self._http.get(url)
        response.raise_for_status()
        jwks_uri = response.json()["jwks_uri"]
        if not isinstance(jwks_uri, str):
            raise TypeError("jwks_uri is not a string")
        return jwks_uri
