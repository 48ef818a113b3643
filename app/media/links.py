"""A job as clients see it, with fresh signed URLs of its stored video and poster (jobs
need not know where videos are stored).

Signing is local work (an HMAC, or an S3 presignature computed offline), so every read
of a job hands out URLs valid for MEDIA_URL_TTL_SECONDS from that read.
"""

from typing import TypeVar, overload

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Job
from app.db.one_row import OneRowStatement
from app.jobs.schemas import CostOut, JobOut, MediaOut, ModerationOut
from app.jobs.states import WITHHELD, MediaStatus, ModerationState
from app.kit.errors import ProblemError
from app.media.keys import KEY_PATTERN, job_of, poster_key, video_key
from app.storage.objects import ObjectStore
from app.storage.signed_urls import REVIEW_SCOPE

Out = TypeVar("Out", bound=JobOut)
_MODERATION_STATE = OneRowStatement(
    select(Job.moderation_state).where(Job.id == bindparam("job_id"))
)


def withheld_problem(state: str | None) -> ProblemError | None:
    """Why users may not have a job's video now, if they may not: moderation holds it
    (403 `in_review`) or took it down (410 `taken_down`, for good)."""
    if state == ModerationState.HELD:
        return ProblemError(403, "in_review", "This video is waiting for a content review.")
    if state in WITHHELD:
        return ProblemError(410, "taken_down", "This video was removed under the content policy.")
    return None


async def check_servable(engine: AsyncEngine, key: str) -> None:
    """Refuse a stored video or poster moderation withholds, whatever URL names it (a URL
    signed before a hold or a takedown included): one primary-key read per request."""
    if not KEY_PATTERN.match(key):
        return  # not a job's media (an upload)
    row = await _MODERATION_STATE.first(engine, job_id=job_of(key))
    if row is not None and (problem := withheld_problem(row["moderation_state"])):
        raise problem


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
        out.cost = CostOut.of(job)
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

    def admin_urls(self, job: Job) -> tuple[str | None, str | None]:
        """Signed URLs of a job's stored video and poster for an admin's review, withheld
        or not (`scope=review`)."""
        if job.media_status not in (MediaStatus.STORED, MediaStatus.PURGING):
            return None, None
        assert job.media_content_type is not None
        video = self._storage.signed_url(video_key(job.id, job.media_content_type), REVIEW_SCOPE)
        return video, self._storage.signed_url(poster_key(job.id), REVIEW_SCOPE)
