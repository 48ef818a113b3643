"""Who is calling: the FastAPI dependencies that turn a bearer credential into a
`Principal` (a token verified by `app.identity.verifier`, or a service API key), the
admin credentials."""

import base64
import binascii
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.api.state import services
from app.identity import api_keys
from app.identity.verifier import Principal, unauthorized
from app.kit.errors import ProblemError

_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT of an accepted identity provider, or a service API key (sbff_live_…)",
)


async def authenticate(request: Request, credential: str) -> Principal:
    """A service API key (`sbff_live_…`) or an identity provider's token."""
    state = services(request)
    if api_keys.looks_like_a_key(credential):
        return await _authenticate_key(request, credential)
    principal: Principal = await state.verifier.verify(credential)
    return principal


async def _authenticate_key(request: Request, key: str) -> Principal:
    """A malformed key, or one that cannot exist (`KnownKeys`), is refused before the
    database. An address whose keys were refused RATE_LIMIT_FAILED_AUTH times gets 429s
    for its refused keys until its window reopens; a valid key passes from it all the same
    (the address may be a proxy, or shared: its other clients are not locked out)."""
    if not api_keys.is_well_formed(key):
        raise unauthorized("The API key is malformed.")
    state = services(request)
    source = f"ip:{request.client.host if request.client else 'unknown'}"
    try:
        if not await state.known_keys.may_exist(key):
            raise unauthorized("The API key is invalid or revoked.")
        return await api_keys.authenticate(state.sessionmaker, state.verifier.plans, key)
    except ProblemError:
        if (wait := state.rate_limits.failing_for(source)) is not None:
            raise ProblemError(
                429,
                "too_many_failed_authentications",
                "Too many refused API keys from this address; retry later.",
                headers={"Retry-After": str(max(1, round(wait)))},
            ) from None
        await state.rate_limits.note_failure(source)
        raise


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
    settings = services(request).settings
    presented = _presented_admin_credential(request)
    if presented and (
        _matches(settings.admin_token, presented) or _matches(extra_secret, presented)
    ):
        return Principal("admin-token", services(request).verifier.plans.default, is_admin=True)
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
