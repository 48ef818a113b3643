"""What the /uploads API answers."""

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.config import UploadKind


class UploadOut(BaseModel):
    """An upload as its owner sees it: what the file really is, once sanitized."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )

    id: uuid.UUID
    kind: UploadKind = Field(description="what the file is, read from its bytes")
    content_type: str = Field(examples=["image/jpeg"])
    size_bytes: int = Field(description="of the sanitized file, as stored")
    sha256: str = Field(description="of the sanitized file, as stored and as Seedance gets it")
    width: int | None = Field(description="images and video: pixels, upright")
    height: int | None
    duration_seconds: float | None = Field(description="video and audio")
    created_at: datetime
    expires_at: datetime = Field(
        description="removed then unless a job uses it; one a job uses lives as long as a job "
        "that is not deleted uses it"
    )
    url: str = Field(
        "",
        description="a short-lived signed URL of the sanitized file, fresh on every read (an "
        "`<img src>` can use it as it is)",
    )
    reference: str = Field(
        "",
        description="what to put in a job's `images`, `reference_video_urls` or "
        "`reference_audio_urls` to use this upload",
        examples=["upload:3f1c2a9e-0b6e-4c1a-9a43-5d1f0a7c2b11"],
    )


class UploadPage(BaseModel):
    items: list[UploadOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )
