"""The /uploads API: the user's own images, reference video and audio, for jobs to use."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api.deps import Creator, Cursor, Reader, Session, Uploader
from app.api.disconnect import until_disconnect
from app.api.errors import problem_responses
from app.api.state import services
from app.uploads import service
from app.uploads.schemas import UploadOut, UploadPage

router = APIRouter(prefix="/uploads", tags=["uploads"], responses=problem_responses(401, 422, 429))

_FORM = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "JPEG, PNG, WebP or HEIC/HEIF; MP4 or MOV (H.264, "
                        "H.265); MP3, WAV or M4A",
                    }
                },
                "required": ["file"],
                "additionalProperties": False,
            }
        }
    },
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadOut,
    summary="Upload an image, a reference video or a reference audio file",
    openapi_extra={"requestBody": _FORM},
    responses=problem_responses(403, 408, 410, 413, 415, 503),
)
async def create_upload(
    principal: Uploader, session: Session, request: Request, response: Response
) -> UploadOut:
    """The file is streamed to storage, judged by what its bytes are (never its name or
    Content-Type, which must not contradict them: 422 `upload_invalid`), and stored only as
    a clean copy: an image decoded, turned upright and encoded again without any metadata
    (EXIF, GPS, XMP, ICC); a video or audio file remuxed without its metadata. Refused:
    files outside Seedance's limits (422 `upload_invalid`, with the reason), larger than
    your plan's cap for their kind (413 `upload_too_large`), past your plan's uploads per
    day (429); 408 `body_timeout` for a body that sends nothing for UPLOAD_IDLE_SECONDS or
    is still arriving after UPLOAD_MAX_SECONDS; 429 `too_many_uploads_in_progress` past
    UPLOADS_IN_PROGRESS_PER_USER (or _PER_ADDRESS); 403 `account_suspended` for a suspended
    user; 410 `subject_erased` when the account was erased while the file was on its way
    (nothing of it is kept); 422 `content_policy` for a file that was taken down; 503
    `staging_full` past the process's staging quota, `busy` when no slot to read it freed
    within UPLOAD_SANITIZE_WAIT_SECONDS (slots are shared fairly between users), and
    `storage_unavailable` when the storage fails (send it again). Use it in a job as its
    `reference` (`upload:<id>`)."""
    state = services(request)
    upload = await state.uploads.create(
        session,
        principal.subject,
        request.client.host if request.client else "unknown",
        principal.plan,
        request.stream(),
        request.headers.get("content-type", ""),
        lambda: until_disconnect(request.receive),
    )
    response.headers["Location"] = f"/uploads/{upload.id}"
    return state.upload_links.upload_out(upload)


@router.get("", response_model=UploadPage, summary="List your uploads, newest first")
async def list_uploads(
    principal: Reader,
    session: Session,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Cursor = None,
) -> UploadPage:
    uploads, next_cursor = await service.list_uploads(
        session, principal.subject, limit=limit, cursor=cursor
    )
    links = services(request).upload_links
    return UploadPage(items=[links.upload_out(u) for u in uploads], next_cursor=next_cursor)


@router.get(
    "/{upload_id:uuid}",
    response_model=UploadOut,
    summary="Read one of your uploads (with a fresh signed URL)",
    responses=problem_responses(404),
)
async def get_upload(
    upload_id: uuid.UUID, principal: Reader, session: Session, request: Request
) -> UploadOut:
    upload = await service.get_upload(session, principal.subject, upload_id)
    return services(request).upload_links.upload_out(upload)


@router.delete(
    "/{upload_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete one of your uploads (its file goes now)",
    responses=problem_responses(404, 409),
)
async def delete_upload(
    upload_id: uuid.UUID, principal: Creator, session: Session, request: Request
) -> Response:
    """409 `upload_in_use` while a job that has not finished uses it (Seedance may still
    fetch it): cancel or delete that job first. A finished job keeps its video."""
    await services(request).uploads.delete(session, principal.subject, upload_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
