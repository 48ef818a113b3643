"""An upload as its owner sees it, with a signed URL valid for MEDIA_URL_TTL_SECONDS (as
videos): built on PUBLIC_BASE_URL and served by `/media/...` on the local backend,
presigned on S3. Seedance's URLs are signed in `inputs.py`."""

from app.db.models import Upload
from app.jobs.inputs import reference_to
from app.storage.objects import ObjectStore
from app.uploads.keys import upload_key
from app.uploads.schemas import UploadOut


class UploadLinks:
    def __init__(self, storage: ObjectStore) -> None:
        self._storage = storage

    def upload_out(self, upload: Upload) -> UploadOut:
        out = UploadOut.model_validate(upload)
        out.url = self._storage.signed_url(upload_key(upload.id, upload.content_type))
        out.reference = reference_to(upload.id)
        return out
