"""The moderation API's bodies: reports, appeals, the review queue, decisions and
standing."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.kit.fields import SINGLE_LINE, Rfc3339
from app.moderation.review import Action, ReportReason

Comment = Annotated[str, Field(max_length=2000)]


class ReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: ReportReason
    comment: Comment | None = None


class AppealCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statement: Comment = Field(min_length=1, description="why the decision is wrong")


class Received(BaseModel):
    status: str = Field("received", examples=["received"])


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Action
    note: Comment | None = Field(None, description="why, for the record (admins read it)")


class SuspensionSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=255, pattern=SINGLE_LINE)]
    until: Rfc3339 | None = Field(None, description="null: until lifted")


class StandingOut(BaseModel):
    """Where a user stands with moderation."""

    model_config = ConfigDict(from_attributes=True)

    suspended: bool
    reason: str | None
    since: datetime | None
    until: datetime | None
    strikes: int = Field(description="content-policy blocks within the strike window")
    strikes_to_suspend: int


class CaseOut(BaseModel):
    """One entry of the review queue."""

    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID
    subject: str = Field(description="the job's owner")
    opened_at: datetime
    priority: int
    held: bool = Field(description="its result waits for review")
    reports: int
    appealed: bool
    escalated: bool
    closed_at: datetime | None


class CasePage(BaseModel):
    items: list[CaseOut]
    next_cursor: str | None


class ModerationEventOut(BaseModel):
    """One entry of the append-only moderation history."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(
        description="decided, unchecked, reported, appealed, released, "
        "taken_down, dismissed, escalated, suspended, lifted"
    )
    stage: str | None
    source: str = Field(description="the provider, `upstream`, `admin`, `user` or `strikes`")
    verdict: str | None
    categories: dict[str, float]
    reason: str | None
    actor: str | None
    note: str | None
    strike: bool
    forgiven_at: datetime | None
    at: datetime


class ReportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    reporter: str
    reason: ReportReason
    comment: str | None
    created_at: datetime
    closed_at: datetime | None
