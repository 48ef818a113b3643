"""A job's inputs that are the user's own uploads: `upload:<id>` in `images`,
`reference_video_urls` or `reference_audio_urls`.

At creation each one must be an upload of the caller's, of the kind its field takes, and
not being removed (a 422 naming the field otherwise); the job records which uploads it
uses (`job_uploads`), which keeps them for as long as it is not deleted. At submission the
dispatcher hands Seedance a signed URL of each (the `InputLinks` port the uploads domain
implements), so jobs never learn where uploads are stored.
"""

import re
import uuid
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import UploadKind
from app.db.models import Job, JobUpload, Upload
from app.kit.errors import FieldError, ProblemError

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


class InputLinks(Protocol):
    """A URL Seedance can fetch an upload from, for as long as a task can run."""

    def input_url(self, upload: Upload) -> str: ...


async def link_uploads(session: AsyncSession, owner: str, jobs: Iterable[tuple[Job, str]]) -> None:
    """Check every upload the jobs name and record that they use them; `jobs` pairs each
    job with where its fields are in the request (`""`, or `jobs[1].`, `base.`). The
    uploads are read `FOR SHARE`: a concurrent `DELETE /uploads/{id}` waits for this
    transaction, then sees the job using it."""
    named: list[tuple[Job, str, UploadKind, uuid.UUID]] = []
    for job, prefix in jobs:
        for name, kind in FIELD_KINDS.items():
            for index, value in enumerate(getattr(job, name)):
                if is_reference(value):
                    named.append((job, f"{prefix}{name}[{index}]", kind, upload_id_of(value)))
    if not named:
        return []
    ids = {upload_id for *_, upload_id in named}
    found = {
        upload.id: upload
        for upload in await session.scalars(
            select(Upload)
            .where(Upload.id.in_(ids), Upload.owner == owner, Upload.remove_at.is_(None))
            .with_for_update(read=True)
        )
    }
    errors = []
    for _, field, kind, upload_id in named:
        upload = found.get(upload_id)
        if upload is None:
            errors.append(
                FieldError(field=field, code="upload_not_found", message="no such upload of yours")
            )
        elif upload.kind != kind:
            message = (
                f"the upload is {_article(upload.kind)} {upload.kind}; this field takes {kind}s"
            )
            errors.append(FieldError(field=field, code="upload_wrong_kind", message=message))
    if errors:
        raise ProblemError(
            422,
            "validation_failed",
            f"The request names {len(errors)} unusable upload(s).",
            errors=errors,
        )
    pairs = {(job.id, upload_id) for job, _, _, upload_id in named}
    return [JobUpload(job_id=job_id, upload_id=upload_id) for job_id, upload_id in pairs]


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"
