"""Signed URLs of stored uploads: for their owner (MEDIA_URL_TTL_SECONDS, as videos), and
for Seedance (through `UploadInputs`, the jobs domain's `Inputs` port: valid as long as a
task can run, JOB_HARD_DEADLINE_SECONDS, and no longer). On the local backend they are built on
PUBLIC_BASE_URL and served by `/media/...`; on S3 they are presigned (for
MEDIA_S3_INPUT_ENDPOINT when Seedance reaches the bucket by another name)."""

import math

from app.config import Settings
from app.db.models import Upload
from app.jobs.inputs import reference_to
from app.storage.objects import ObjectStore
from app.uploads.keys import upload_key
from app.uploads.schemas import UploadOut


class UploadLinks:
    def __init__(self, storage: ObjectStore, settings: Settings) -> None:
        self._storage = storage
        self._input_ttl = math.ceil(settings.job_hard_deadline_seconds)

    def upload_out(self, upload: Upload) -> UploadOut:
        out = UploadOut.model_validate(upload)
        out.url = self._storage.signed_url(upload_key(upload.id, upload.content_type))
        out.reference = reference_to(upload.id)
        return out

    def input_url(self, upload: Upload) -> str:
        return self._storage.input_url(upload_key(upload.id, upload.content_type), self._input_ttl)
