"""Who is calling: the FastAPI dependencies that turn a bearer credential into a
`Principal` (a token verified by `app.identity.verifier`, or a service API key), the
admin credentials, and dev tokens."""

import base64
import binascii
import hmac
import time
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.config import JwtAlgorithm, Settings
from app.errors import ProblemError
from app.identity import api_keys
from app.identity.verifier import Principal, unauthorized

_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT of an accepted identity provider, or a service API key (sbff_live_…)",
)


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


async def authenticate(request: Request, credential: str) -> Principal:
    """A service API key (`sbff_live_…`) or an identity provider's token."""
    state = request.app.state
    if api_keys.looks_like_a_key(credential):
        return await api_keys.authenticate(state.sessionmaker, state.verifier.plans, credential)
    principal: Principal = await state.verifier.verify(credential)
    return principal


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the verified caller, or a 401 with WWW-Authenticate."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized("A bearer token is required.", error="invalid_request")
    principal = await authenticate(request, credentials.credentials)
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


async def admin_principal(request: Request, *, extra_secret: SecretStr | None = None) -> Principal:
    """An admin: a JWT with role=admin, or ADMIN_TOKEN (or `extra_secret`) presented as a
    bearer token or as the Basic password. Anything else is a 401 (Basic challenge, so
    browsers prompt) or, for a valid non-admin JWT, a 403."""
    settings = request.app.state.settings
    presented = _presented_admin_credential(request)
    if presented and (
        _matches(settings.admin_token, presented) or _matches(extra_secret, presented)
    ):
        return Principal("admin-token", request.app.state.verifier.plans.default, is_admin=True)
    if presented is None or request.headers["authorization"].lower().startswith("basic"):
        raise ProblemError(
            401,
            "unauthorized",
            "Admin credentials are required.",
            headers={"WWW-Authenticate": 'Basic realm="seedance-bff admin", Bearer'},
        )
    principal = await authenticate(request, presented)
    request.state.principal = principal
    if not principal.is_admin:
        raise ProblemError(403, "forbidden", "This needs the admin role.")
    return principal


async def require_admin(request: Request) -> Principal:
    """FastAPI dependency for admin routes."""
    return await admin_principal(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_admin)]
