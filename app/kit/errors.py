"""One error format everywhere: RFC 9457 `application/problem+json` with a stable `code`.

Services raise `ProblemError`, knowing nothing of HTTP frameworks; `app/api/errors.py`
turns it, request validation errors, routing errors and unexpected exceptions into the
same body shape.
"""

from pydantic import BaseModel, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    field: str = Field(examples=["duration"])
    code: str = Field(examples=["invalid_duration"])
    message: str = Field(examples=["seedance-2.0 accepts a duration of 5, 10 or 15 seconds"])
    categories: list[str] | None = Field(
        None,
        description="with `content_policy`: the moderation categories the field was refused for",
        examples=[["violence"]],
    )


class Problem(BaseModel):
    """The body of every error response."""

    type: str = Field("about:blank", examples=["about:blank"])
    title: str = Field(examples=["Unprocessable Content"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["The request body has 1 invalid field."])
    code: str = Field(examples=["validation_failed"])
    errors: list[FieldError] | None = None
    required: int | None = Field(
        None, description="with `insufficient_credits`: the credits the request needs"
    )
    available: int | None = Field(
        None, description="with `insufficient_credits`: the credits the caller has"
    )


class ProblemError(Exception):
    """Raise anywhere below a router to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        credits: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.credits = credits  # (required, available) of a refusal for want of credits


def invalid_field(field: str, code: str, message: str, detail: str) -> ProblemError:
    """The 422 of a rule checked after parsing, shaped like the validator's own."""
    return ProblemError(
        422,
        "validation_failed",
        detail,
        errors=[FieldError(field=field, code=code, message=message)],
    )
