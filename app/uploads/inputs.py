"""The uploads domain's side of a job's inputs (the `Inputs` port jobs declares).

At creation each upload a job names must be the caller's, of the kind its field takes, and
not being removed (a 422 naming the field otherwise); the job then records that it uses
it (`job_uploads`), which keeps it for as long as the job is not deleted. The uploads are
read `FOR SHARE`: a concurrent `DELETE /uploads/{id}` waits for the create's transaction,
then sees the job using it. At submission Seedance gets a URL of each, signed for as long
as a task can run (JOB_HARD_DEADLINE_SECONDS) and no longer: on S3 presigned for
MEDIA_S3_INPUT_ENDPOINT when Seedance reaches the bucket by another name."""

import math
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.models import JobUpload, Upload
from app.jobs.inputs import NamedInput
from app.kit.errors import FieldError, ProblemError
from app.storage.objects import ObjectStore
from app.uploads.keys import upload_key


class UploadInputs:
    def __init__(self, storage: ObjectStore, settings: Settings) -> None:
        self._storage = storage
        self._url_ttl = math.ceil(settings.job_hard_deadline_seconds)

    async def link(self, session: AsyncSession, owner: str, named: Sequence[NamedInput]) -> None:
        if not named:
            return
        found = {
            upload.id: upload
            for upload in await session.scalars(
                select(Upload)
                .where(
                    Upload.id.in_({n.upload_id for n in named}),
                    Upload.owner == owner,
                    Upload.remove_at.is_(None),
                )
                .with_for_update(read=True)
            )
        }
        errors = [error for n in named if (error := _unusable(n, found.get(n.upload_id)))]
        if errors:
            raise ProblemError(
                422,
                "validation_failed",
                f"The request names {len(errors)} unusable upload(s).",
                errors=errors,
            )
        pairs = {(n.job_id, n.upload_id) for n in named}
        session.add_all(
            JobUpload(job_id=job_id, upload_id=upload_id) for job_id, upload_id in pairs
        )

    async def fetch_urls(
        self, session: AsyncSession, upload_ids: set[uuid.UUID]
    ) -> dict[uuid.UUID, str]:
        if not upload_ids:
            return {}
        # never removed while a job that is not deleted uses them; checked all the same
        query = select(Upload).where(Upload.id.in_(upload_ids), Upload.remove_at.is_(None))
        return {
            upload.id: self._storage.input_url(
                upload_key(upload.id, upload.content_type), self._url_ttl
            )
            for upload in await session.scalars(query)
        }


def _unusable(named: NamedInput, upload: Upload | None) -> FieldError | None:
    if upload is None:
        return FieldError(
            field=named.field, code="upload_not_found", message="no such upload of yours"
        )
    if upload.kind != named.kind:
        article = "an" if upload.kind[0] in "aeiou" else "a"
        message = f"the upload is {article} {upload.kind}; this field takes {named.kind}s"
        return FieldError(field=named.field, code="upload_wrong_kind", message=message)
    return None
