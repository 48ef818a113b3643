"""The HTTP side of the one error format: the exception handlers that answer every error
as `application/problem+json` (`app/kit/errors.py` holds the types), and the OpenAPI
entries that document those bodies."""

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Mount

from app.db.availability import DATABASE_ERRORS, is_database_unavailable
from app.kit.errors import PROBLEM_MEDIA_TYPE, FieldError, Problem, ProblemError

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

# pydantic's built-in error types -> our stable codes (custom validators already raise ours)
_PYDANTIC_CODES = {
    "missing": "required",
    "extra_forbidden": "unknown_field",
    "json_invalid": "invalid_json",
    "model_attributes_type": "invalid_type",
    "dict_type": "invalid_type",
    "list_type": "invalid_type",
    "string_type": "invalid_type",
    "int_type": "invalid_type",
    "int_parsing": "invalid_type",
    "bool_type": "invalid_type",
    "uuid_parsing": "invalid_uuid",
    "uuid_type": "invalid_uuid",
    "enum": "invalid_choice",
    "literal_error": "invalid_choice",
    "too_short": "too_short",
    "too_long": "too_long",
    "string_too_short": "too_short",
    "string_too_long": "too_long",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "string_pattern_mismatch": "invalid_format",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
    credits: tuple[int, int] | None = None,
) -> JSONResponse:
    required, available = credits or (None, None)
    body = Problem(
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        errors=errors,
        required=required,
        available=available,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def field_path(loc: tuple[int | str, ...]) -> str:
    """('body', 'images', 1) -> 'images[1]'; ('query', 'limit') -> 'limit'."""
    parts = loc[1:] if loc and loc[0] in {"body", "query", "path", "header"} else loc
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def validation_errors(exc: RequestValidationError) -> list[FieldError]:
    return [
        FieldError(
            field=field_path(tuple(err["loc"])),
            code=_PYDANTIC_CODES.get(err["type"], err["type"]),
            message=err["msg"].removeprefix("Value error, "),
        )
        for err in exc.errors()
    ]


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        exc.code,
        exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        credits=exc.credits,
    )


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc)
    noun = "field" if len(errors) == 1 else "fields"
    return problem_response(
        422, "validation_failed", f"The request has {len(errors)} invalid {noun}.", errors=errors
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # FastAPI raises 400 for bodies it cannot decode (bad UTF-8, JSON nested too deep)
    codes = {
        400: "invalid_body",
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
    }
    headers = exc.headers
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers = {**(headers or {}), "Allow": allowed}
    return problem_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers=headers
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (Starlette's own `Allow` names only the
    first route that matched the path, and GET /jobs and POST /jobs are two routes)."""
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
            if not isinstance(route, Mount)  # static files take any method, then refuse
        )
    ]
    return ", ".join(allowed)


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):
        return await _on_unexpected(request, exc)
    logger.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        503,
        "database_unavailable",
        "The service cannot reach its database; retry shortly.",
        headers={"Retry-After": "5"},
    )


async def _on_client_gone(_request: Request, _exc: Exception) -> Response:
    """The client hung up while sending its body: not a server error, and nobody reads
    the answer. The request's log line and metrics say 499, as nginx does."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal_error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, _on_database_error)
    app.add_exception_handler(ClientDisconnect, _on_client_gone)
    app.add_exception_handler(Exception, _on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the problem+json bodies a route can return."""
    return {
        status: {
            "model": Problem,
            "description": _TITLES.get(status, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
