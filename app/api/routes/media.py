"""Serving stored media to browsers and apps.

`GET /jobs/{id}/content` (the owner, with a bearer token) redirects to a fresh signed URL,
as the content endpoints of the hosted video APIs do. `GET /media/{key}` serves those
URLs on the local backend (on S3 they point at the bucket): the signature is the only
credential, `Range` requests get `206` so players can seek (a bad range a problem+json
400 or 416), `If-None-Match` with the current ETag a `304`, and responses carry
`Content-Type` (never to be sniffed as another), `ETag`, `Accept-Ranges` and private
caching until the URL expires.
"""

import time
import uuid
from enum import StrEnum
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from app.api.deps import Reader
from app.api.errors import problem_responses
from app.api.state import services
from app.jobs import service
from app.kit.errors import ProblemError
from app.media import keys as media_keys
from app.media.links import check_servable, withheld_problem
from app.storage.objects import CONTENT_TYPES, content_type_of
from app.storage.signed_urls import MEDIA_PATH, REVIEW_SCOPE, check_signature
from app.uploads import keys as upload_keys

router = APIRouter(tags=["media"])
files_router = APIRouter(tags=["media"])


class Scope(StrEnum):
    REVIEW = REVIEW_SCOPE


class Variant(StrEnum):
    VIDEO = "video"
    POSTER = "poster"


@router.get(
    "/jobs/{job_id:uuid}/content",
    status_code=307,
    response_class=RedirectResponse,
    summary="Redirect to a fresh signed URL of your job's video or poster",
    responses={
        307: {"description": "`Location` is a signed URL valid for MEDIA_URL_TTL_SECONDS"},
        **problem_responses(401, 403, 404, 409, 410, 422, 429),
    },
)
async def get_job_content(
    job_id: uuid.UUID,
    principal: Reader,
    request: Request,
    variant: Variant = Variant.VIDEO,
) -> RedirectResponse:
    """404 `job_not_found` for a job that is not yours (or deleted); 409 `media_not_ready`
    while the video is not stored (yet, or any more); 403 `in_review` while moderation
    holds it, 410 `taken_down` once it was removed."""
    state = services(request)
    row = await service.read_job(state.engine, principal.subject, job_id)
    if (problem := withheld_problem(row.moderation_state)) is not None:
        raise problem
    job = state.media_links.job_out(row)
    url = job.video_url if variant is Variant.VIDEO else job.poster_url
    if url is None:
        raise ProblemError(
            409, "media_not_ready", f"The job is {job.status.value}; it has no stored video."
        )
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


def _forbidden(code: str) -> ProblemError:
    detail = {
        "url_expired": "This media URL has expired; read the job again for a fresh one.",
        "invalid_signature": "This media URL's signature is not valid.",
    }[code]
    return ProblemError(403, code, detail)


def servable(key: str) -> bool:
    """Whether `key` is one the media or uploads domain makes (and nothing else, such as
    the staging folder)."""
    return bool(media_keys.KEY_PATTERN.match(key) or upload_keys.KEY_PATTERN.match(key))


@files_router.get(
    MEDIA_PATH + "{key:path}",
    response_class=FileResponse,
    summary="A stored video, poster or upload, by signed URL (local media backend)",
    responses={
        200: {"content": {t: {} for t in sorted(set(CONTENT_TYPES.values()))}},
        206: {"description": "the byte range asked for with `Range`"},
        304: {"description": "`If-None-Match` named the current ETag: the copy held is fresh"},
        **problem_responses(400, 403, 404, 410, 416, 422),
    },
)
async def get_media_file(
    key: str,
    request: Request,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    signature: Annotated[str, Query(max_length=128)],
    scope: Annotated[Scope | None, Query(description="`review`: a moderator's URL")] = None,
) -> Response:
    if not servable(key):
        raise ProblemError(404, "not_found", "No such media object.")
    settings = services(request).settings
    if (problem := check_signature(settings, key, expires, signature, scope)) is not None:
        raise _forbidden(problem)
    if scope is None:
        await check_servable(services(request).engine, key)
    path = services(request).storage.local_path(key)
    try:
        stat = await anyio.Path(path).stat()
    except FileNotFoundError:  # deleted with its job, or expired by retention
        raise ProblemError(404, "not_found", "No such media object.") from None
    max_age = max(0, expires - int(time.time()))
    headers = {"Cache-Control": f"private, max-age={max_age}", "X-Content-Type-Options": "nosniff"}
    response = FileResponse(
        path, headers=headers, stat_result=stat, media_type=content_type_of(key)
    )
    etag = response.headers["etag"]
    if _names(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={**headers, "ETag": etag})
    _check_range(request.headers.get("range"), stat.st_size)
    return response


def _names(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _check_range(http_range: str | None, size: int) -> None:
    """A `Range` FileResponse would refuse, refused as every other error is (its own
    answers are text/plain)."""
    if http_range is None:
        return
    try:
        FileResponse._parse_range_header(http_range, size)  # Starlette's own parser
    except MalformedRangeHeader as exc:
        raise ProblemError(
            400, "invalid_range", f"The Range header is not valid: {exc.content}"
        ) from None
    except RangeNotSatisfiable:
        raise ProblemError(
            416,
            "range_not_satisfiable",
            f"The range starts past the end of the object ({size} bytes).",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None


# players may ask for the headers alone (HEAD answers like GET, without the body)
files_router.add_api_route(
    MEDIA_PATH + "{key:path}", get_media_file, methods=["HEAD"], include_in_schema=False
)
