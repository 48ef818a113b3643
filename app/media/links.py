"""A job as clients see it, with fresh signed URLs of its stored video and poster (jobs
need not know where videos are stored).

Signing is local work (an HMAC, or an S3 presignature computed offline), so every read
of a job hands out URLs valid for MEDIA_URL_TTL_SECONDS from that read.
"""

from typing import TypeVar, overload

from app.db.models import Job
from app.jobs.schemas import JobOut, MediaOut, ModerationOut
from app.jobs.states import WITHHELD, MediaStatus
from app.media.keys import poster_key, video_key
from app.storage.objects import ObjectStore

Out = TypeVar("Out", bound=JobOut)


class MediaLinks:
    def __init__(self, storage: ObjectStore) -> None:
        self._storage = storage

    @overload
    def job_out(self, job: Job) -> JobOut: ...
    @overload
    def job_out(self, job: Job, model: type[Out]) -> Out: ...
    def job_out(self, job: Job, model: type[JobOut] = JobOut) -> JobOut:
        out = model.model_validate(job)
        out.moderation = ModerationOut.of(job)
        if (
            job.media_status == MediaStatus.STORED
            and job.deleted_at is None
            and job.moderation_state not in WITHHELD
        ):
            assert job.media_content_type is not None  # set with media_status STORED
            out.video_url = self._storage.signed_url(video_key(job.id, job.media_content_type))
            out.poster_url = self._storage.signed_url(poster_key(job.id))
            out.media = MediaOut.model_validate(job)
        return out
