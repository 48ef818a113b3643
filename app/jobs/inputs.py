"""A job's inputs that are the user's own uploads: `upload:<id>` in `images`,
`reference_video_urls` or `reference_audio_urls`.

Jobs know only this syntax. What an upload must be to be used (the caller's, of the kind
its field takes, not being removed) and where it is stored belong to the uploads domain,
which implements the `Inputs` port declared here; `main` wires it. At creation the port
checks the named uploads and records that the jobs use them; at submission it gives
Seedance a URL of each.
"""

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import UploadKind
from app.db.models import Job

UPLOAD_SCHEME = "upload:"
UPLOAD_REFERENCE_PATTERN = r"^upload:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_REFERENCE = re.compile(UPLOAD_REFERENCE_PATTERN)
FIELD_KINDS = {
    "images": UploadKind.IMAGE,
    "reference_video_urls": UploadKind.VIDEO,
    "reference_audio_urls": UploadKind.AUDIO,
}


def is_reference(value: str) -> bool:
    return value.startswith(UPLOAD_SCHEME)


def is_valid_reference(value: str) -> bool:
    return bool(_REFERENCE.match(value))


def reference_to(upload_id: uuid.UUID) -> str:
    return f"{UPLOAD_SCHEME}{upload_id}"


def upload_id_of(reference: str) -> uuid.UUID:
    return uuid.UUID(reference.removeprefix(UPLOAD_SCHEME))


def references(job: Job) -> list[uuid.UUID]:
    """The uploads a job names, in no particular order."""
    values = [*job.images, *job.reference_video_urls, *job.reference_audio_urls]
    return list({upload_id_of(v) for v in values if is_reference(v)})


@dataclass(frozen=True, slots=True)
class NamedInput:
    """An upload a job names, and where the request named it (`images[1]`,
    `jobs[2].images[0]`, `base.reference_video_urls[0]`)."""

    job_id: uuid.UUID
    field: str
    kind: UploadKind
    upload_id: uuid.UUID


def named_inputs(jobs: Iterable[tuple[Job, str]]) -> list[NamedInput]:
    """Every upload the jobs name; `jobs` pairs each job with its fields' prefix in the
    request (`""`, `jobs[1].`, `base.`)."""
    return [
        NamedInput(job.id, f"{prefix}{name}[{index}]", kind, upload_id_of(value))
        for job, prefix in jobs
        for name, kind in FIELD_KINDS.items()
        for index, value in enumerate(getattr(job, name))
        if is_reference(value)
    ]


class Inputs(Protocol):
    """What jobs need of the uploads they name (the uploads domain implements it)."""

    async def link(self, session: AsyncSession, owner: str, named: Sequence[NamedInput]) -> None:
        """Check each named upload, in the create's transaction (after its jobs were
        flushed), and record that the jobs use them; a 422 `ProblemError` naming every
        unusable field otherwise."""
        ...

    async def fetch_urls(
        self, session: AsyncSession, upload_ids: set[uuid.UUID]
    ) -> dict[uuid.UUID, str]:
        """A URL Seedance can fetch each upload from while a task runs, for those of
        `upload_ids` that are still there."""
        ...
