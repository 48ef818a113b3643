"""Request and response models of the /jobs API, with every validation rule of docs/upstream.md.

Each rule raises a `PydanticCustomError` whose type is our stable error code, so the
problem+json body names the field and the code (see app/api/errors.py). Field order matters:
a field's validator may read the fields declared before it (`info.data`).
"""

import hashlib
import re
import unicodedata
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from app.db.models import Batch, Job
from app.jobs.inputs import UPLOAD_REFERENCE_PATTERN, is_reference, is_valid_reference
from app.jobs.states import CreditState, JobStatus, ModerationState, appealable
from app.kit.fields import WholeNumber
from app.kit.public_urls import MAX_URL_LENGTH, PUBLIC_HTTPS_URL_PATTERN, check_public_https_url


class SeedanceModel(StrEnum):
    MINI = "seedance-2-mini"
    STANDARD = "seedance-2.0"


class Resolution(StrEnum):
    P480 = "480p"
    P720 = "720p"


class AspectRatio(StrEnum):
    R16_9 = "16:9"
    R9_16 = "9:16"
    R4_3 = "4:3"
    R3_4 = "3:4"
    R1_1 = "1:1"
    R21_9 = "21:9"
    ADAPTIVE = "adaptive"


# Upstream limits, in one place so a correction of docs/upstream.md touches one table.
ALLOWED_DURATIONS: dict[SeedanceModel, tuple[int, ...]] = {
    SeedanceModel.MINI: tuple(range(4, 16)),
    SeedanceModel.STANDARD: (5, 10, 15),
}
DEFAULT_DURATION: dict[SeedanceModel, int] = {SeedanceModel.MINI: 8, SeedanceModel.STANDARD: 5}
MAX_PROMPT_CHARS = 2000
MAX_IMAGES = 4
MAX_REFERENCE_URLS = 4  # not published upstream; our cap
_ALLOWED_CONTROL_CHARS = frozenset("\n\t")

_URL_SCHEMA = {
    "type": "string",
    "format": "uri",
    "maxLength": MAX_URL_LENGTH,
    "pattern": PUBLIC_HTTPS_URL_PATTERN,
    "examples": ["https://cdn.example.com/boat.png"],
}
_UPLOAD_REFERENCE_SCHEMA = {
    "type": "string",
    "pattern": UPLOAD_REFERENCE_PATTERN,
    "description": "an upload of yours: the `reference` that `POST /uploads` answered",
    "examples": ["upload:3f1c2a9e-0b6e-4c1a-9a43-5d1f0a7c2b11"],
}


def _check_input(value: str) -> str:
    if not is_reference(value):
        return check_public_https_url(value)
    if not is_valid_reference(value):
        raise PydanticCustomError(
            "invalid_upload_reference", "an upload is named `upload:` and its id (lowercase)"
        )
    return value


# An input file: a public https URL, or an upload of the caller's
MediaInput = Annotated[
    str,
    AfterValidator(_check_input),
    WithJsonSchema({"oneOf": [_URL_SCHEMA, _UPLOAD_REFERENCE_SCHEMA]}),
]
# A prompt's characters, as the schema states them: no control character but tab, LF and
# CRLF, and at least one that is not a space.
_PROMPT_CHAR = r"(?:[^\x00-\x08\x0b-\x1f\x7f-\x9f]|\r\n)"
PROMPT_PATTERN = rf"^{_PROMPT_CHAR}*[^\s\x00-\x1f\x7f-\x9f]{_PROMPT_CHAR}*$"


# Removed from prompts: bidi embeddings, overrides and isolates (text that displays other
# than it reads) and tag characters (invisible ASCII, a way to smuggle instructions past a
# reader; they also end subdivision flag emoji, which become a plain black flag).
_INVISIBLE_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]")


def _check_prompt(value: str) -> str:
    """Length and characters are those of the text as sent (as the schema's maxLength and
    pattern count them); only then are CRLFs normalized and the ends trimmed."""
    if len(value) > MAX_PROMPT_CHARS:
        raise PydanticCustomError(
            "prompt_too_long",
            "the prompt has {length} characters; at most {limit} are accepted",
            {"length": len(value), "limit": MAX_PROMPT_CHARS},
        )
    value = value.replace("\r\n", "\n")
    for char in value:
        if unicodedata.category(char) == "Cs":
            raise PydanticCustomError(
                "prompt_invalid_unicode", "the prompt contains a lone surrogate (invalid Unicode)"
            )
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROL_CHARS:
            raise PydanticCustomError(
                "prompt_control_characters",
                "the prompt contains a control character (U+{code:04X})",
                {"code": ord(char)},
            )
    value = _INVISIBLE_CONTROLS.sub("", value).strip()
    if not value:
        raise PydanticCustomError("prompt_empty", "the prompt is empty")
    return value


def _check_url_list(values: list[str] | None, *, limit: int, code: str) -> list[str]:
    if values is None:
        return []
    if not values or len(values) > limit:
        raise PydanticCustomError(code, "give between 1 and {limit} URLs", {"limit": limit})
    return values


Prompt = Annotated[
    str,
    AfterValidator(_check_prompt),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_PROMPT_CHARS,
            "pattern": PROMPT_PATTERN,
            "examples": ["A paper boat drifting down a rainy street, golden hour"],
        }
    ),
]


def _url_list_schema(limit: int) -> WithJsonSchema:
    """An optional list of 1 to `limit` inputs: absent or null, never empty."""
    items = {"oneOf": [_URL_SCHEMA, _UPLOAD_REFERENCE_SCHEMA]}
    array = {"type": "array", "items": items, "minItems": 1, "maxItems": limit}
    return WithJsonSchema({"anyOf": [array, {"type": "null"}]})


def _duration_schema(model: SeedanceModel) -> dict[str, object]:
    allowed = ALLOWED_DURATIONS[model]
    rule: dict[str, object] = (
        {"minimum": allowed[0], "maximum": allowed[-1]}
        if allowed == tuple(range(allowed[0], allowed[-1] + 1))
        else {"enum": list(allowed)}
    )
    return {"type": "integer", **rule}


def _split_by_model(schema: dict[str, Any]) -> None:
    """Rewrite a job body's object schema as one variant per model: `duration`'s choices
    depend on `model`, which properties alone cannot say. `model` may be left out for Mini.
    With images, `adaptive` is refused; without (absent or null), a body with `prompt`
    needs one."""
    properties = dict(schema.pop("properties"))
    required = list(schema.pop("required", []))
    del schema["type"], schema["additionalProperties"]
    # as `if`/`then`, the rules read as they are said (code generators skip them; the
    # service's 422 codes remain)
    rules = [
        {
            "if": {"required": ["images"], "properties": {"images": {"type": "array"}}},
            "then": {"properties": {"aspect_ratio": {"not": {"const": "adaptive"}}}},
        }
    ]
    if "prompt" in properties:
        rules.append(
            {
                "if": {"properties": {"images": {"type": "null"}}},
                "then": {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
            }
        )
    variants = []
    for model in SeedanceModel:
        model_schema = {"type": "string", "const": model.value, "default": model.value}
        duration = properties["duration"]
        variants.append(
            {
                "title": f"{schema['title']} ({model.value})",
                "type": "object",
                "properties": {
                    **properties,
                    "model": model_schema,
                    "duration": {
                        "anyOf": [_duration_schema(model), {"type": "null"}],
                        "default": DEFAULT_DURATION[model],
                        "description": duration["description"],
                    },
                },
                "required": required if model is SeedanceModel.MINI else [*required, "model"],
                "additionalProperties": False,
                "allOf": rules,
            }
        )
    schema["oneOf"] = variants


# What a job renders: the same eight names on the request body (`JobCreate`), the row
# (`Job`) and Seedance's request (`GenerateRequest`), mapped from one to another only here.
URL_LISTS = ("images", "reference_video_urls", "reference_audio_urls")
JOB_PARAMETERS = ("model", "prompt", "duration", "resolution", "aspect_ratio", *URL_LISTS)


def job_parameters(source: object) -> dict[str, Any]:
    """The parameters of a body or a row; URL lists as lists (a body's absent one is [])."""
    values = {name: getattr(source, name) for name in JOB_PARAMETERS}
    return values | {name: values[name] or [] for name in URL_LISTS}


class JobParams(BaseModel):
    """Everything about a video but its prompt (the shared base of batch variants)."""

    model_config = ConfigDict(extra="forbid")

    model: SeedanceModel = SeedanceModel.MINI
    images: Annotated[list[MediaInput] | None, _url_list_schema(MAX_IMAGES)] = Field(
        None,
        description=f"1 to {MAX_IMAGES} images (image-to-video): public https URLs, or your "
        "uploads (`upload:<id>`)",
        validate_default=True,
    )
    duration: WholeNumber | None = Field(
        None,
        description="seconds: 4..15 for seedance-2-mini (default 8); 5, 10 or 15 for "
        "seedance-2.0 (default 5)",
        validate_default=True,
    )
    resolution: Resolution = Resolution.P720
    aspect_ratio: AspectRatio = Field(
        AspectRatio.R16_9, description="`adaptive` is for text-to-video only"
    )
    reference_video_urls: Annotated[
        list[MediaInput] | None, _url_list_schema(MAX_REFERENCE_URLS)
    ] = Field(
        None,
        description="reference videos: public https URLs, or your uploads (`upload:<id>`)",
        validate_default=True,
    )
    reference_audio_urls: Annotated[
        list[MediaInput] | None, _url_list_schema(MAX_REFERENCE_URLS)
    ] = Field(
        None,
        description="reference audio: public https URLs, or your uploads (`upload:<id>`)",
        validate_default=True,
    )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        reference = handler(core_schema)
        _split_by_model(handler.resolve_ref_schema(reference))
        return reference

    def as_input(self) -> dict[str, object]:
        """The fields the client set, as input again: an absent URL list is normalized to
        [], which as input would be refused, so it goes back as null."""
        fields = self.model_dump(exclude_unset=True)
        return {name: (None if value == [] else value) for name, value in fields.items()}

    @field_validator("images")
    @classmethod
    def _images_count(cls, value: list[str] | None) -> list[str]:
        return _check_url_list(value, limit=MAX_IMAGES, code="invalid_image_count")

    @field_validator("reference_video_urls", "reference_audio_urls")
    @classmethod
    def _references_count(cls, value: list[str] | None) -> list[str]:
        return _check_url_list(value, limit=MAX_REFERENCE_URLS, code="invalid_reference_count")

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: int | None, info: ValidationInfo) -> int | None:
        model = info.data.get("model")
        if model is None:  # the model itself was invalid; that error is reported
            return value
        if value is None:
            return DEFAULT_DURATION[model]
        allowed = ALLOWED_DURATIONS[model]
        if value not in allowed:
            raise PydanticCustomError(
                "invalid_duration",
                "{model} accepts a duration of {allowed} seconds",
                {"model": model.value, "allowed": _describe(allowed)},
            )
        return value

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect_ratio(cls, value: AspectRatio, info: ValidationInfo) -> AspectRatio:
        if value is AspectRatio.ADAPTIVE and info.data.get("images"):
            raise PydanticCustomError(
                "invalid_aspect_ratio", "`adaptive` is only for text-to-video (no images)"
            )
        return value


class JobCreate(JobParams):
    """A video to generate. Text-to-video needs a prompt; image-to-video needs `images`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "seedance-2-mini",
                    "prompt": "A paper boat drifting down a rainy street, golden hour",
                    "duration": 8,
                    "resolution": "720p",
                    "aspect_ratio": "16:9",
                }
            ]
        },
    )

    prompt: Prompt | None = Field(
        None,
        description=f"at most {MAX_PROMPT_CHARS} characters, not only spaces; required "
        "without images",
        validate_default=True,
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            return value
        if "images" in info.data and not info.data["images"]:
            raise PydanticCustomError("prompt_required", "a prompt is required without images")
        return None

    def fingerprint(self) -> str:
        """A stable digest of the normalized request, to tell idempotent retries from reuse."""
        return _digest(self.model_dump(mode="json"))


def _digest(data: object) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


MIN_VARIANTS, MAX_VARIANTS = 2, 8


class BatchCreate(BaseModel):
    """2 to 8 prompt variants created together: either full job bodies in `jobs`, or
    `prompts` applied to one shared `base`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "base": {"duration": 5, "resolution": "480p", "aspect_ratio": "9:16"},
                    "prompts": [
                        "a paper boat on a rainy street, golden hour",
                        "a paper boat on a rainy street, neon night",
                    ],
                }
            ]
        },
    )

    jobs: list[JobCreate] | None = Field(None, min_length=MIN_VARIANTS, max_length=MAX_VARIANTS)
    base: JobParams | None = None
    prompts: list[Prompt] | None = Field(None, min_length=MIN_VARIANTS, max_length=MAX_VARIANTS)

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        given = self.model_fields_set
        jobs_form = "jobs" in given and self.jobs is not None and not given & {"base", "prompts"}
        prompts_form = "prompts" in given and self.prompts is not None and "jobs" not in given
        if not (jobs_form or prompts_form):
            raise PydanticCustomError(
                "invalid_batch", "give either `jobs`, or `prompts` with an optional `base`"
            )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The two shapes as a `oneOf`: `jobs`, or `prompts` with an optional `base`."""
        reference = handler(core_schema)
        schema = handler.resolve_ref_schema(reference)
        properties = schema.pop("properties")
        del schema["type"], schema["additionalProperties"]

        def required_list(name: str) -> dict[str, object]:
            return next(s for s in properties[name]["anyOf"] if s.get("type") == "array")

        schema["oneOf"] = [
            {
                "title": "BatchOfJobs",
                "type": "object",
                "properties": {"jobs": required_list("jobs")},
                "required": ["jobs"],
                "additionalProperties": False,
            },
            {
                "title": "BatchOfPrompts",
                "type": "object",
                "properties": {"base": properties["base"], "prompts": required_list("prompts")},
                "required": ["prompts"],
                "additionalProperties": False,
            },
        ]
        return reference

    def variants(self) -> list[JobCreate]:
        if self.jobs is not None:
            return self.jobs
        base = self.base.as_input() if self.base else {}
        return [JobCreate.model_validate({**base, "prompt": p}) for p in self.prompts or []]

    def prompt_field(self, index: int) -> str:
        """Where variant `index`'s prompt is in the request, for error messages."""
        return self.field(index, "prompt")

    def field(self, index: int, name: str) -> str:
        """Where variant `index`'s `name` is in the request (a shared one is in `base`)."""
        if self.jobs is not None:
            return f"jobs[{index}].{name}"
        return f"prompts[{index}]" if name == "prompt" else f"base.{name}"

    def fingerprint(self) -> str:
        return _digest([variant.fingerprint() for variant in self.variants()])


class PromoteRequest(BaseModel):
    """The full render of a succeeded Mini job, on seedance-2.0."""

    model_config = ConfigDict(extra="forbid")

    duration: Annotated[WholeNumber, WithJsonSchema(_duration_schema(SeedanceModel.STANDARD))] = (
        Field(DEFAULT_DURATION[SeedanceModel.STANDARD], description="seconds")
    )
    resolution: Resolution = Resolution.P720

    @field_validator("duration")
    @classmethod
    def _standard_duration(cls, value: int) -> int:
        allowed = ALLOWED_DURATIONS[SeedanceModel.STANDARD]
        if value not in allowed:
            raise PydanticCustomError(
                "invalid_duration",
                "seedance-2.0 accepts a duration of {allowed} seconds",
                {"allowed": _describe(allowed)},
            )
        return value


def _describe(allowed: tuple[int, ...]) -> str:
    if allowed == tuple(range(allowed[0], allowed[-1] + 1)) and len(allowed) > 3:
        return f"{allowed[0]} to {allowed[-1]}"
    return ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"


class MediaOut(BaseModel):
    """What the stored video really is, read from the file itself."""

    model_config = ConfigDict(from_attributes=True)

    content_type: str = Field(validation_alias="media_content_type", examples=["video/mp4"])
    size_bytes: int = Field(validation_alias="media_bytes")
    sha256: str = Field(validation_alias="media_sha256")
    width: int = Field(validation_alias="media_width", examples=[1280])
    height: int = Field(validation_alias="media_height", examples=[720])
    duration_seconds: float | None = Field(validation_alias="media_duration")
    frame_rate: float | None = Field(validation_alias="media_frame_rate")
    video_codec: str | None = Field(validation_alias="media_video_codec", examples=["h264"])
    has_audio: bool | None = Field(validation_alias="media_has_audio")
    mismatch: str | None = Field(
        validation_alias="media_mismatch",
        description="how the delivered video differs from the request, if it does",
        examples=["resolution: asked 720p, got 854x480"],
    )


class ModerationStage(StrEnum):
    INPUT = "input"
    OUTPUT = "output"


class ModerationOut(BaseModel):
    """Where the job stands with moderation, beside its status."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    state: ModerationState = Field(
        ModerationState.CLEAR,
        description="`clear`; `unchecked` (accepted while moderation was unavailable: judged "
        "before it is sent); `held` (the result waits for review: no `video_url` until "
        "released); `blocked` (refused by the content policy); `taken_down` (removed after "
        "review)",
    )
    stage: ModerationStage | None = Field(None, description="where it was judged")
    source: str | None = Field(
        None, description="who decided: the moderation provider, `upstream` (Seedance) or `admin`"
    )
    categories: list[str] = Field(default_factory=list, examples=[["violence"]])
    appealable: bool = Field(False, description="its owner may appeal (`POST /jobs/{id}/appeal`)")

    @classmethod
    def of(cls, job: Job) -> "ModerationOut":
        return cls(
            state=ModerationState(job.moderation_state or ModerationState.CLEAR),
            stage=ModerationStage(job.moderation_stage) if job.moderation_stage else None,
            source=job.moderation_source,
            categories=job.moderation_categories,
            appealable=appealable(job),
        )


class CostOut(BaseModel):
    """What the job costs its owner, in credits (with the credits ledger on; otherwise only
    `estimated`)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    estimated: int = Field(description="from the service's cost table")
    held: int = Field(0, description="held from the balance while the job runs")
    charged: int = Field(0, description="taken: the job succeeded")
    refunded: int = Field(0, description="given back: the job ended without a video")

    @classmethod
    def of(cls, job: Job) -> "CostOut":
        state = job.credit_state
        amount = job.estimated_cost
        return cls(
            estimated=amount,
            held=amount if state == CreditState.HELD else 0,
            charged=amount if state == CreditState.CHARGED else 0,
            refunded=amount if state == CreditState.REFUNDED else 0,
        )


class JobOut(BaseModel):
    """A job as its owner sees it."""

    # every field is in every answer: the document says so (generated types need no `?`)
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )

    id: uuid.UUID
    status: JobStatus
    model: SeedanceModel
    prompt: str | None
    duration: int
    resolution: Resolution
    aspect_ratio: AspectRatio
    images: list[str]
    reference_video_urls: list[str]
    reference_audio_urls: list[str]
    estimated_cost: int = Field(description="credits, from the service's cost table")
    video_url: str | None = Field(
        None,
        description="once succeeded: a short-lived signed URL of the video in our storage, "
        "fresh on every read (a `<video src>` can use it as it is)",
    )
    poster_url: str | None = Field(
        None, description="once succeeded: a short-lived signed URL of a JPEG poster frame"
    )
    media: MediaOut | None = Field(None, description="once succeeded: the stored video's facts")
    error_code: str | None = Field(
        description="stable code when failed: upstream_rejected, upstream_failed, "
        "upstream_unavailable, upstream_timeout, queue_timeout, "
        "input_unavailable, media_unavailable, media_too_large, media_invalid, "
        "media_unsafe_url, content_policy (refused for its content: see `moderation`)"
    )
    error_detail: str | None
    batch_id: uuid.UUID | None = Field(description="the batch this job was created in")
    source_job_id: uuid.UUID | None = Field(description="the Mini job this one promotes")
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None = Field(
        None,
        ge=0,
        description="while queued: how many jobs the scheduler would send to Seedance before "
        "this one, as the order stands now (0: next); null once submitted (and for a job "
        "deeper than its owner's first 500 waiting ones)",
        examples=[2],
    )
    estimated_start_at: datetime | None = Field(
        None,
        description="while queued: when it should be sent, from the recent render times and "
        "the account's cap; null once submitted, before any render was measured, or while "
        "dispatch is paused (the Seedance account cannot work)",
    )
    moderation: ModerationOut = Field(default_factory=ModerationOut)
    cost: CostOut = Field(default_factory=lambda: CostOut(estimated=0))


class QueueSpotOut(BaseModel):
    """The `queue` event of a live stream: a waiting job's new place."""

    job_id: uuid.UUID
    queue_position: int = Field(ge=0, description="jobs the scheduler would send before it")
    estimated_start_at: datetime | None


class BatchOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    jobs: list[JobOut] = Field(description="the variants, in the order they were given")

    @classmethod
    def of(cls, batch: Batch, jobs: list[JobOut]) -> "BatchOut":
        return cls(id=batch.id, created_at=batch.created_at, jobs=jobs)


class JobEventOut(BaseModel):
    """One recorded move of a job, with the job as it is now (the data of an SSE event)."""

    event_id: int
    job_id: uuid.UUID
    from_status: JobStatus | None
    to_status: JobStatus
    source: str
    at: datetime
    job: JobOut


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )
