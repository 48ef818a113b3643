"""Where a job's video and poster are stored. Keys derive from the job id, so a repeated
copy overwrites the same object (at most one stored object per job, whatever crashes or
races happened on the way)."""

import re
import uuid

VIDEO_EXTENSIONS = {"video/mp4": "mp4", "video/webm": "webm"}
POSTER_CONTENT_TYPE = "image/jpeg"
# the keys `video_key` and `poster_key` make, and nothing else
KEY_PATTERN = re.compile(r"^(videos/[0-9a-f-]{36}\.(mp4|webm)|posters/[0-9a-f-]{36}\.jpg)$")


def video_key(job_id: uuid.UUID, content_type: str) -> str:
    return f"videos/{job_id}.{VIDEO_EXTENSIONS[content_type]}"


def poster_key(job_id: uuid.UUID) -> str:
    return f"posters/{job_id}.jpg"


def job_keys(job_id: uuid.UUID) -> list[str]:
    """Every key a job's media can have (a purge removes all of them)."""
    return [video_key(job_id, t) for t in VIDEO_EXTENSIONS] + [poster_key(job_id)]


def job_of(key: str) -> uuid.UUID:
    """The job whose video or poster `key` is (a key `KEY_PATTERN` matched)."""
    return uuid.UUID(key.split("/", 1)[1].split(".", 1)[0])
