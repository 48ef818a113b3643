"""The admin API's shapes for service API keys."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.identity.verifier import MAX_SUBJECT_LENGTH
from app.kit.fields import SINGLE_LINE, Rfc3339


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[
        str, Field(min_length=1, max_length=MAX_SUBJECT_LENGTH, pattern=SINGLE_LINE)
    ] = Field(
        description="who the key acts as: its jobs are this subject's",
        examples=["svc:batch-pipeline"],
    )
    plan: str | None = Field(
        None, max_length=64, pattern=SINGLE_LINE, description="one of PLANS (default: DEFAULT_PLAN)"
    )
    description: str | None = Field(None, max_length=500, pattern=SINGLE_LINE)
    expires_at: Rfc3339 | None = Field(None, description="unset: until revoked")


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    prefix: str = Field(description="the key's first characters", examples=["sbff_live_x7Qa"])
    subject: str
    plan: str | None
    plan_in_force: str = Field(
        "",
        description="the plan requests with the key get: `plan`, or DEFAULT_PLAN when `plan` "
        "is unset or no longer in PLANS",
    )
    description: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="to the minute")


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the key: shown only now, stored only as a hash")
