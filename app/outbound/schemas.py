"""The admin API's shapes for webhook endpoints and their deliveries."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, WithJsonSchema

from app.kit.fields import SINGLE_LINE
from app.kit.public_urls import MAX_URL_LENGTH, PUBLIC_HTTPS_URL_PATTERN
from app.outbound.states import AttemptResult, EventType, MessageStatus
from app.outbound.urls import LOCAL_RECEIVER_URL_PATTERN

# checked by app/outbound/urls.py, which gives each broken rule its own 422 code
EndpointUrl = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "format": "uri",
            "maxLength": MAX_URL_LENGTH,
            "pattern": f"{PUBLIC_HTTPS_URL_PATTERN}|{LOCAL_RECEIVER_URL_PATTERN}",
            "description": "public https URL (outside production also http(s)://127.0.0.1, "
            "localhost or [::1], which production refuses)",
            "examples": ["https://api.example.com/hooks/seedance"],
        }
    ),
]
EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, max_length=len(EventType), description="the events to send"),
]
Description = Annotated[str, Field(max_length=500, pattern=SINGLE_LINE)]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: EndpointUrl
    events: EventTypes = Field(default_factory=lambda: list(EventType))
    description: Description | None = None
    include_prompts: StrictBool = Field(
        True, description="false: payloads carry no prompt (for receivers that must not see one)"
    )


class EndpointUpdate(BaseModel):
    """Only the fields given change. Enabling an endpoint clears its failure record."""

    model_config = ConfigDict(extra="forbid")

    url: EndpointUrl | None = None
    events: EventTypes | None = None
    description: Description | None = None
    include_prompts: StrictBool | None = None
    enabled: StrictBool | None = None


class EndpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    events: list[EventType]
    description: str | None
    include_prompts: bool
    enabled: bool
    failing_since: datetime | None = Field(
        description="the first failed attempt since the last success; null while healthy"
    )
    disabled_at: datetime | None = Field(description="when the service disabled it")
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None = Field(
        description="until then, the secret rotated out still signs alongside the new one"
    )
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(
        description="the signing secret: shown only now", examples=["whsec_MfKQ9r8GKYqrTwjUPD8"]
    )


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: StrictFloat | None = Field(
        None,
        ge=0,
        le=7 * 24 * 3600,
        description="how long the old secret keeps signing "
        "(default: OUTBOUND_ROTATION_GRACE_SECONDS)",
    )


class SecretRotated(BaseModel):
    secret: str = Field(description="the new signing secret: shown only now")
    previous_secret_expires_at: datetime


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    result: AttemptResult
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str | None = Field(description="the first 1 KB of the answer")


class DeliveryOut(BaseModel):
    """One event sent to one endpoint; `id` is its `webhook-id` without the `msg_` prefix."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    webhook_id: str = Field(examples=["msg_0f5b6c1e9d3a4f7b8c2d1e0f9a8b7c6d"])
    type: str
    job_id: uuid.UUID | None
    status: MessageStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="while pending: the next try")
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    history: list[AttemptOut] = Field(description="every attempt, oldest first")


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None
