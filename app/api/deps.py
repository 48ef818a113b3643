"""Dependencies shared by the routers: the session, the rate-limited caller, the
Idempotency-Key header, the page cursor."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.rate_limiting import per_user
from app.api.state import services
from app.identity.verifier import Principal
from app.ratelimits.windows import RouteClass


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, from the app's sessionmaker."""
    async with services(request).sessionmaker() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]
Creator = Annotated[Principal, per_user(RouteClass.CREATE)]
Reader = Annotated[Principal, per_user(RouteClass.READ)]
Uploader = Annotated[Principal, per_user(RouteClass.UPLOAD)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retries with the same key return the original job instead of a new one.",
    ),
]
# the opaque cursor of app/kit/cursor.py (base64url); one it did not issue is a 422
# `invalid_cursor`
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="`next_cursor` of the previous page",
    ),
]
