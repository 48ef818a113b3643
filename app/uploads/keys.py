"""Where an upload is stored: from its id and what it really is."""

import re
import uuid

# what a sanitized upload can be (app/uploads/sanitize.py writes nothing else)
UPLOAD_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "video/mp4": "mp4",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/mp4": "m4a",
}
# the keys `upload_key` makes, and nothing else
KEY_PATTERN = re.compile(r"^uploads/[0-9a-f-]{36}\.(jpg|png|mp4|mp3|wav|m4a)$")


def upload_key(upload_id: uuid.UUID, content_type: str) -> str:
    return f"uploads/{upload_id}.{UPLOAD_EXTENSIONS[content_type]}"
