"""Who is calling: a JWT bearer token verified with PyJWT becomes a `Principal`.

HS256 with a shared secret by default, RS256 with a public key when configured; the
issuer, audience and expiry are always checked. `sub` names the owner of jobs.
"""

import base64
import binascii
import functools
import hmac
import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.config import JwtAlgorithm, Settings
from app.errors import ProblemError

MAX_SUBJECT_LENGTH = 255
_bearer = HTTPBearer(auto_error=False, description="A JWT whose `sub` is the user id")


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    is_admin: bool = False


def _unauthorized(detail: str, error: str = "invalid_token") -> ProblemError:
    return ProblemError(
        401,
        "unauthorized",
        detail,
        headers={"WWW-Authenticate": f'Bearer realm="seedance-bff", error="{error}"'},
    )


def _verification_key(settings: Settings) -> str:
    if settings.jwt_algorithm is JwtAlgorithm.RS256:
        assert settings.jwt_public_key is not None  # enforced by Settings
        return settings.jwt_public_key
    return settings.jwt_secret.get_secret_value()


@functools.lru_cache(maxsize=8192)
def _verified_claims(
    token: str, key: str, algorithm: str, audience: str, issuer: str, leeway: int
) -> tuple[str, str | None, float]:
    """(sub, role, exp) of a token whose signature, issuer and audience check out. Cached:
    a client sends the same token on every request, and verifying it was a fixed cost of
    each one; only tokens that verified are kept (PyJWT raises otherwise), and their
    expiry is checked again on every use."""
    claims = jwt.decode(
        token,
        key,
        algorithms=[algorithm],
        audience=audience,
        issuer=issuer,
        leeway=leeway,
        options={"require": ["sub", "exp", "iss", "aud"]},
    )
    role = claims.get("role")
    return claims["sub"], role if isinstance(role, str) else None, float(claims["exp"])


def verify_token(settings: Settings, token: str) -> Principal:
    try:
        subject, role, expires_at = _verified_claims(
            token,
            _verification_key(settings),
            settings.jwt_algorithm.value,
            settings.jwt_audience,
            settings.jwt_issuer,
            settings.jwt_leeway_seconds,
        )
    except jwt.ExpiredSignatureError as exc:
        raise _unauthorized("The bearer token has expired.") from exc
    except (jwt.InvalidTokenError, TypeError, ValueError) as exc:
        raise _unauthorized("The bearer token is invalid.") from exc
    if time.time() > expires_at + settings.jwt_leeway_seconds:
        raise _unauthorized("The bearer token has expired.")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise _unauthorized("The bearer token's subject is invalid.")
    return Principal(subject=subject, is_admin=role == "admin")


def issue_token(
    settings: Settings, subject: str, *, admin: bool = False, ttl: int | None = None
) -> str:
    """Sign an HS256 token for local use (dev CLI, tests); production tokens come from your IdP."""
    if settings.jwt_algorithm is not JwtAlgorithm.HS256:
        raise ValueError("tokens can only be issued locally with the HS256 shared secret")
    now = int(time.time())
    claims = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + (ttl if ttl is not None else settings.dev_token_ttl_seconds),
    }
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the verified caller, or a 401 with WWW-Authenticate."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("A bearer token is required.", error="invalid_request")
    principal = verify_token(request.app.state.settings, credentials.credentials)
    request.state.principal = principal  # for the request log line
    return principal


def _matches(secret: SecretStr | None, presented: str) -> bool:
    return secret is not None and hmac.compare_digest(
        secret.get_secret_value().encode(), presented.encode()
    )


def _presented_admin_credential(request: Request) -> str | None:
    """The bearer token, or the password of HTTP Basic (what a browser can send to /docs)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def admin_principal(request: Request, *, extra_secret: SecretStr | None = None) -> Principal:
    """An admin: a JWT with role=admin, or ADMIN_TOKEN (or `extra_secret`) presented as a
    bearer token or as the Basic password. Anything else is a 401 (Basic challenge, so
    browsers prompt) or, for a valid non-admin JWT, a 403."""
    settings = request.app.state.settings
    presented = _presented_admin_credential(request)
    if presented and (
        _matches(settings.admin_token, presented) or _matches(extra_secret, presented)
    ):
        return Principal(subject="admin-token", is_admin=True)
    if presented is None or request.headers["authorization"].lower().startswith("basic"):
        raise ProblemError(
            401,
            "unauthorized",
            "Admin credentials are required.",
            headers={"WWW-Authenticate": 'Basic realm="seedance-bff admin", Bearer'},
        )
    principal = verify_token(settings, presented)
    request.state.principal = principal
    if not principal.is_admin:
        raise ProblemError(403, "forbidden", "This needs the admin role.")
    return principal


async def require_admin(request: Request) -> Principal:
    """FastAPI dependency for admin routes."""
    return admin_principal(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_admin)]
