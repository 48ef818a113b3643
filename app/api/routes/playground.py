"""The prompt playground: a static page over the public /jobs API, served at /playground
(PLAYGROUND_ENABLED), and, outside production, the dev token endpoint it signs in with."""

import os
from os import PathLike
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.api.rate_limiting import per_client_ip
from app.api.state import services
from app.identity.tokens import issue_token
from app.ratelimits.windows import RouteClass

PLAYGROUND_DIR = Path(__file__).resolve().parents[2] / "playground"
REVIEW_DIR = Path(__file__).resolve().parents[2] / "review"  # the moderators' page
# the page loads only its own files and talks only to this service; videos come from
# Seedance's CDN, so media may come from anywhere
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data: https: http:; media-src https: http:; form-action 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class PlaygroundFiles(StaticFiles):
    """The page's files, each with the security headers above."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


def playground_files(directory: Path = PLAYGROUND_DIR) -> PlaygroundFiles:
    """A page's files (the playground's, or the review page's)."""
    return PlaygroundFiles(directory=directory, html=True)


class DevTokenRequest(BaseModel):
    user: str = Field("dev-user", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")


class DevToken(BaseModel):
    token: str
    user: str
    expires_in: int = Field(description="seconds")


dev_router = APIRouter(include_in_schema=False)


@dev_router.post("/dev/token", dependencies=[per_client_ip(RouteClass.CREATE)])
async def dev_token(
    request: Request, body: Annotated[DevTokenRequest | None, Body()] = None
) -> DevToken:
    """A client token signed with the dev JWT secret, so a browser can try the API without
    an identity provider. Never mounted in production."""
    settings = services(request).settings
    user = (body or DevTokenRequest()).user
    return DevToken(
        token=issue_token(settings, user), user=user, expires_in=settings.dev_token_ttl_seconds
    )
