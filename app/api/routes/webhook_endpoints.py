"""Admins manage the product's webhook endpoints and watch their deliveries."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from app.api.auth import require_admin
from app.api.deps import Cursor, Session
from app.api.errors import problem_responses
from app.api.state import services
from app.kit.loops import wake_if_running
from app.outbound import deliveries, endpoints
from app.outbound.schemas import (
    DeliveryOut,
    DeliveryPage,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
    RotateSecret,
    SecretRotated,
)
from app.outbound.states import MessageStatus

router = APIRouter(
    prefix="/admin/webhook-endpoints",
    tags=["admin: webhooks"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403, 404, 422),
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EndpointCreated,
    summary="Add a webhook endpoint (its signing secret is shown only in this answer)",
    responses=problem_responses(400),
)
async def create_webhook_endpoint(
    body: EndpointCreate, session: Session, request: Request
) -> EndpointCreated:
    state = services(request)
    endpoint, secret = await endpoints.create_endpoint(
        session, state.settings, state.outbound_secrets, body
    )
    shown = EndpointOut.model_validate(endpoint).model_dump()
    return EndpointCreated(**shown, secret=secret)


@router.get("", response_model=list[EndpointOut], summary="List the webhook endpoints")
async def list_webhook_endpoints(session: Session) -> list[EndpointOut]:
    return [EndpointOut.model_validate(e) for e in await endpoints.list_endpoints(session)]


@router.get("/{endpoint_id:uuid}", response_model=EndpointOut, summary="Read a webhook endpoint")
async def get_webhook_endpoint(endpoint_id: uuid.UUID, session: Session) -> EndpointOut:
    return EndpointOut.model_validate(await endpoints.get_endpoint(session, endpoint_id))


@router.patch(
    "/{endpoint_id:uuid}",
    response_model=EndpointOut,
    summary="Change a webhook endpoint (events, enabled, URL, description, prompts)",
    responses=problem_responses(400),
)
async def update_webhook_endpoint(
    endpoint_id: uuid.UUID, body: EndpointUpdate, session: Session, request: Request
) -> EndpointOut:
    endpoint = await endpoints.update_endpoint(
        session, services(request).settings, endpoint_id, body
    )
    wake_if_running(services(request).outbound_worker)  # re-enabled: its backlog is due
    return EndpointOut.model_validate(endpoint)


@router.delete(
    "/{endpoint_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a webhook endpoint and its undelivered messages",
)
async def delete_webhook_endpoint(endpoint_id: uuid.UUID, session: Session) -> Response:
    await endpoints.delete_endpoint(session, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{endpoint_id:uuid}/rotate-secret",
    response_model=SecretRotated,
    summary="Rotate the signing secret; the old one keeps signing for a grace period",
    responses=problem_responses(400),
)
async def rotate_webhook_secret(
    endpoint_id: uuid.UUID, session: Session, request: Request, body: RotateSecret | None = None
) -> SecretRotated:
    state = services(request)
    endpoint, secret = await endpoints.rotate_secret(
        session, state.settings, state.outbound_secrets, endpoint_id, body or RotateSecret()
    )
    assert endpoint.previous_secret_expires_at is not None
    return SecretRotated(
        secret=secret, previous_secret_expires_at=endpoint.previous_secret_expires_at
    )


@router.post(
    "/{endpoint_id:uuid}/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    summary="Send a `webhook.test` event to the endpoint",
    responses=problem_responses(409),
)
async def send_test_event(
    endpoint_id: uuid.UUID, session: Session, request: Request
) -> DeliveryOut:
    delivery = await deliveries.send_test_event(session, endpoint_id)
    wake_if_running(services(request).outbound_worker)
    return delivery


@router.get(
    "/{endpoint_id:uuid}/deliveries",
    response_model=DeliveryPage,
    summary="The endpoint's deliveries, newest first, with every attempt",
)
async def list_webhook_deliveries(
    endpoint_id: uuid.UUID,
    session: Session,
    delivery_status: Annotated[MessageStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Cursor = None,
) -> DeliveryPage:
    return await deliveries.list_deliveries(
        session, endpoint_id, status=delivery_status, limit=limit, cursor=cursor
    )


@router.get(
    "/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}",
    response_model=DeliveryOut,
    summary="One delivery, with every attempt",
)
async def get_webhook_delivery(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, session: Session
) -> DeliveryOut:
    return await deliveries.get_delivery(session, endpoint_id, delivery_id)


@router.post(
    "/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    summary="Send a delivery again now (same webhook-id)",
    responses=problem_responses(409),
)
async def retry_webhook_delivery(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, session: Session, request: Request
) -> DeliveryOut:
    delivery = await deliveries.retry_delivery(session, endpoint_id, delivery_id)
    wake_if_running(services(request).outbound_worker)
    return delivery
