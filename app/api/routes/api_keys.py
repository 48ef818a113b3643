"""Admins create and revoke the service API keys of the product's servers."""

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response, status

from app.api.auth import require_admin
from app.api.deps import Session
from app.api.errors import problem_responses
from app.api.state import services
from app.identity import api_keys
from app.identity.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from app.kit.errors import invalid_field

router = APIRouter(
    prefix="/admin/api-keys",
    tags=["admin: api keys"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403, 404, 422),
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create a service API key (the key is shown only in this answer)",
    responses=problem_responses(400),
)
async def create_api_key(body: ApiKeyCreate, session: Session, request: Request) -> ApiKeyCreated:
    settings = services(request).settings
    if body.plan is not None and body.plan not in {*settings.plans, settings.default_plan}:
        message = f"{body.plan!r} is not one of PLANS"
        raise invalid_field("plan", "unknown_plan", message, f"The plan is refused: {message}.")
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        message = "the expiry must be in the future"
        detail = f"The expiry is refused: {message}."
        raise invalid_field("expires_at", "in_the_past", message, detail)
    row, key = await api_keys.create_key(
        session,
        subject=body.subject,
        plan=body.plan,
        description=body.description,
        expires_at=body.expires_at,
    )
    services(request).known_keys.learn(key)
    return ApiKeyCreated(**_shown(request, row).model_dump(), key=key)


def _shown(request: Request, row: object) -> ApiKeyOut:
    """A key (its row) as admins see it, with the plan its requests get."""
    out = ApiKeyOut.model_validate(row)
    out.plan_in_force = services(request).verifier.plans.in_force(out.plan).name
    return out


@router.get("", response_model=list[ApiKeyOut], summary="List the service API keys")
async def list_api_keys(session: Session, request: Request) -> list[ApiKeyOut]:
    return [_shown(request, key) for key in await api_keys.list_keys(session)]


@router.get("/{key_id:uuid}", response_model=ApiKeyOut, summary="Read a service API key")
async def get_api_key(key_id: uuid.UUID, session: Session, request: Request) -> ApiKeyOut:
    return _shown(request, await api_keys.get_key(session, key_id))


@router.delete(
    "/{key_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke a service API key (refused from the next request on)",
)
async def revoke_api_key(key_id: uuid.UUID, session: Session) -> Response:
    await api_keys.revoke_key(session, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
