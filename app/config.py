"""Every knob of the service, read once from the environment (or a `.env` file).

Tests and tools build their own `Settings(...)` and pass it to `create_app`, so nothing
reads the environment behind the factory's back.
"""

import json
import re
from enum import Enum, StrEnum
from typing import Annotated, Self

from limits import parse_many
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    TypeAdapter,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789"  # noqa: S105 - refused in production
DEV_CALLBACK_SECRET = "dev-only-webhook-secret-change-me-012345"  # noqa: S105 - refused in production
DEV_SEEDANCE_KEY = "sim-dev-key"  # the simulator's default key
DEV_MEDIA_URL_SECRET = "dev-only-media-url-secret-change-me-0123"  # noqa: S105 - refused in production
DEV_OUTBOUND_SECRETS_KEY = "dev-only-outbound-secrets-key-change-me-0"  # refused in production
# Standard Webhooks' suggested schedule: the delays after each failed attempt (8 attempts)
DEFAULT_OUTBOUND_RETRY_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class Environment(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


class Role(StrEnum):
    ALL = "all"  # one process does everything (`make run`, a single replica)
    API = "api"  # HTTP and live streams; no background loop
    WORKER = "worker"  # the background loops; only /healthz, /readyz and /metrics


class DocsAccess(StrEnum):
    PUBLIC = "public"
    ADMIN = "admin"
    OFF = "off"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class MediaBackend(StrEnum):
    LOCAL = "local"  # a folder on this machine, served by the service itself
    S3 = "s3"  # any S3-compatible bucket (AWS S3, MinIO, R2, GCS interop)


class UploadKind(StrEnum):
    """What an uploaded file really is (read from its bytes, never its name)."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


MIB = 1024 * 1024
# Seedance's input limits (docs/upstream.md, assumed from providers serving it)
DEFAULT_UPLOAD_MAX_BYTES = {
    UploadKind.IMAGE: 30 * MIB,
    UploadKind.VIDEO: 50 * MIB,
    UploadKind.AUDIO: 15 * MIB,
}


class QueuePolicy(StrEnum):
    FAIR = "fair"  # the owner with the fewest jobs upstream for their plan's weight first
    FIFO = "fifo"  # the oldest job first (kept for comparison)


class ModerationProvider(StrEnum):
    RULES = "rules"
    OPENAI = "openai"
    HTTP = "http"
    NONE = "none"


class ModerationMode(StrEnum):
    ENFORCE = "enforce"
    OBSERVE = "observe"


class ModerationFailMode(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class Threshold(BaseModel):
    """Scores (0..1) from which a category is sent to review or blocked."""

    model_config = ConfigDict(extra="forbid")
    review: float | None = Field(None, ge=0, le=1)
    block: float | None = Field(None, ge=0, le=1)


class JwtAlgorithm(StrEnum):
    HS256 = "HS256"
    RS256 = "RS256"


class Plan(BaseModel):
    """Limits sold as a plan (an entry of PLANS); an unset field takes the global setting
    (RATE_LIMIT_CREATE, RATE_LIMIT_READ, USER_MAX_JOBS_IN_FLIGHT, USER_DAILY_CREDIT_BUDGET,
    every model and resolution of COST_PER_SECOND)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_limit_create: str | None = None
    rate_limit_read: str | None = None
    max_jobs_in_flight: int | None = Field(None, ge=1)
    daily_credit_budget: int | None = Field(None, ge=0)
    models: list[str] | None = None
    resolutions: list[str] | None = None
    queue_weight: int = Field(
        1, ge=1, description="share of the account's slots while jobs wait (fair share)"
    )
    rate_limit_upload: str | None = None
    uploads_per_day: int | None = Field(None, ge=1)
    upload_max_bytes: dict[UploadKind, PositiveInt] | None = Field(
        None, description="per kind; a kind left out takes UPLOAD_MAX_BYTES's"
    )
    monthly_credits: int = Field(
        0,
        ge=0,
        le=10**12,
        description="with CREDITS_LEDGER: granted each month (UTC), on the user's first use "
        "in it; what is left at the month's end expires (spent before other credits)",
    )


class TokenIssuer(BaseModel):
    """One identity provider whose tokens are accepted (an entry of JWT_ISSUERS).

    The audience check is the provider's own: `aud` (most), `azp` (Clerk's session tokens
    carry no `aud`), `client_id` (Cognito access tokens), or none, with the reason stated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, description="the exact `iss` of its tokens")
    jwks_url: str | None = None
    discovery: bool = Field(
        False, description="find the JWKS from <issuer>/.well-known/openid-configuration"
    )
    audiences: list[str] = Field(default_factory=list, description="accepted `aud` values")
    authorized_parties: list[str] = Field(default_factory=list, description="accepted `azp` values")
    client_ids: list[str] = Field(default_factory=list, description="accepted `client_id` values")
    no_audience_check_because: str | None = Field(
        None, min_length=10, description="why this provider's tokens name no audience"
    )
    # this provider's claim mapping, when it differs from JWT_SUBJECT_CLAIM / JWT_ADMIN_* /
    # JWT_PLAN_CLAIM
    subject_claim: str | list[str] | None = None
    admin_claim: str | list[str] | None = None
    admin_values: list[str] | None = None
    plan_claim: str | list[str] | None = None

    @model_validator(mode="after")
    def _checked(self) -> Self:
        if not (self.jwks_url or self.discovery):
            raise ValueError(f"issuer {self.issuer}: give jwks_url, or discovery: true")
        checks = (self.audiences, self.authorized_parties, self.client_ids)
        if not any(checks) and not self.no_audience_check_because:
            raise ValueError(
                f"issuer {self.issuer}: give audiences, authorized_parties or client_ids, "
                "or no_audience_check_because (never skipped silently)"
            )
        return self


# Credits per second of video, by model and resolution (docs/upstream.md: billed per task by model
# and duration; no public table, so operators set their own). Estimated cost = rate * duration.
DEFAULT_COST_PER_SECOND: dict[str, dict[str, int]] = {
    "seedance-2-mini": {"480p": 1, "720p": 2},
    "seedance-2.0": {"480p": 3, "720p": 5},
}


def renamed(name: str, old: str) -> AliasChoices:
    """A setting's name and the name it had before, still read (deprecated): operators'
    environments keep working while they move to the new one."""
    return AliasChoices(name, old)


class Settings(BaseSettings):
    # populate_by_name: a renamed setting is given by its field name in code and tests
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    environment: Environment = Field(Environment.DEV, description="`dev` or `production`")
    role: Role = Field(
        Role.ALL,
        description="`all`; `api` (HTTP and live streams, no background loop) or `worker` (the "
        "loops: dispatcher, reconciler, media copier, webhooks, retention, stats; serves only "
        "`/healthz`, `/readyz`, `/metrics`), so a fleet scales the two apart",
    )

    # Storage
    database_url: str = Field(
        "sqlite+aiosqlite:///./seedance-bff.db",
        description="`postgresql+asyncpg://user:pw@host/db` in production",
    )
    database_pool_size: int = Field(
        20, ge=1, description="Postgres connections per process (a fixed pool: see Benchmarks)"
    )
    database_max_overflow: int = Field(
        0,
        ge=0,
        description=(
            "extra connections beyond the pool; each is opened and closed per burst, which costs "
            "more than it gives"
        ),
    )
    redis_url: str | None = Field(
        None, description="e.g. `redis://127.0.0.1:6379/0`; rate limits are in memory without it"
    )
    redis_timeout_seconds: float = Field(
        2.0, gt=0, description="one rate-limit call to Redis, connecting included"
    )
    redis_max_connections: int = Field(
        100, ge=1, description="per process; a request beyond them waits for one (its deadline)"
    )
    redis_breaker_failures: int = Field(
        3, ge=1, description="failures in a row that open the circuit breaker around Redis"
    )
    redis_breaker_reset_seconds: float = Field(
        5.0, gt=0, description="how long the breaker stays open before one probe"
    )

    # Upstream (Seedance v2)
    seedance_api_key: SecretStr = Field(
        SecretStr(DEV_SEEDANCE_KEY),
        description="the upstream bearer key; never logged, returned or stored",
    )
    seedance_base_url: str = Field(
        "https://seedanceapi.org/v2", description="the dev run points it at the simulator"
    )
    seedance_connect_timeout: float = Field(5.0, gt=0, description="seconds")
    seedance_read_timeout: float = Field(
        30.0, gt=0, description="seconds; a generate call past it has an unknown outcome"
    )
    seedance_max_attempts: int = Field(4, ge=1, description="attempts per upstream call")
    seedance_backoff_initial: float = Field(
        0.5, ge=0, description="seconds, first retry backoff (then exponential, with jitter)"
    )
    seedance_backoff_max: float = Field(
        20.0, ge=0, description="seconds, longest backoff (and longest honoured `Retry-After`)"
    )

    # Callbacks: where Seedance reaches us, and the key that signs each job's callback URL
    public_base_url: str = Field(
        "http://127.0.0.1:8000",
        description="where Seedance reaches our callbacks (public https in production)",
    )
    callback_secret: SecretStr = Field(
        SecretStr(DEV_CALLBACK_SECRET),
        validation_alias=renamed("callback_secret", "webhook_secret"),
        description="signs each job's callback URL",
    )
    confirm_success_with_status: bool = Field(
        True, description="confirm a SUCCESS callback with one status call"
    )

    # Client auth (JWT bearer)
    jwt_algorithm: JwtAlgorithm = Field(JwtAlgorithm.HS256, description="or `RS256`")
    jwt_secret: SecretStr = Field(SecretStr(DEV_JWT_SECRET), description="HS256 shared secret")
    jwt_public_key: str | None = Field(None, description="PEM public key, required with RS256")
    jwt_issuer: str = Field("seedance-bff", description="required `iss`")
    jwt_audience: str = Field("seedance-bff", description="required `aud`")
    jwt_leeway_seconds: int = Field(30, ge=0, description="clock skew allowed on `exp`")
    # the issuer above with keys from a JWKS instead of JWT_SECRET / JWT_PUBLIC_KEY
    jwt_jwks_url: str | None = Field(
        None,
        description="`JWT_ISSUER`'s keys from a JWKS instead of `JWT_SECRET` / `JWT_PUBLIC_KEY`",
    )
    jwt_oidc_discovery: bool = Field(
        False, description="find JWT_ISSUER's JWKS from its /.well-known/openid-configuration"
    )
    # more identity providers (JSON list of TokenIssuer), each with its JWKS
    jwt_issuers: list[TokenIssuer] = Field(
        default_factory=list,
        description='more identity providers (JSON list; see "Identity providers")',
    )
    # claim mapping: a claim name, or a JSON list of keys down to a nested claim
    jwt_subject_claim: str | list[str] = Field(
        "sub", description="the claim that names the user (a name, or a JSON list of keys)"
    )
    jwt_admin_claim: str | list[str] = Field(
        "role", description="the claim that makes an admin (a string or a list claim)"
    )
    jwt_admin_values: list[str] = Field(
        default_factory=lambda: ["admin"], description="the values of it that do"
    )
    jwt_plan_claim: str | list[str] | None = Field(
        None, description="the claim naming the user's plan (unset: everyone on DEFAULT_PLAN)"
    )
    # JWKS caching (the reference values of maintained verifiers)
    jwks_cache_seconds: float = Field(
        3600.0, gt=0, description="when the provider's Cache-Control says nothing"
    )
    jwks_refetch_seconds: float = Field(
        10.0,
        ge=0,
        description="an unknown `kid` refetches the keys at most this often, counted from the "
        "last such refetch (a key rotated just after any fetch is honoured at once)",
    )
    jwks_failure_backoff_seconds: float = Field(
        10.0, ge=0, description="after a failed fetch, no other for this long"
    )
    jwks_stale_seconds: float = Field(
        86400.0, ge=0, description="cached keys keep verifying this long while the provider is down"
    )
    jwks_fetch_timeout_seconds: float = Field(
        5.0, gt=0, description="one fetch of a provider's keys or configuration"
    )
    dev_token_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=60, description="lifetime of tokens from `python -m app.identity.tokens`"
    )

    # Request rate limits (`limits` syntax: "30/minute", "5/second"): per user for the /jobs
    # API, per source IP for Seedance's callbacks. Shared through Redis when REDIS_URL is set.
    rate_limit_create: str = Field("30/minute", description="per user, `POST /jobs`")
    rate_limit_read: str = Field("300/minute", description="per user, `GET /jobs…`, `/me/usage`")
    rate_limit_callback: str = Field(
        "6000/minute",
        validation_alias=renamed("rate_limit_callback", "rate_limit_webhook"),
        description="per source IP, Seedance's callbacks",
    )
    rate_limit_failed_auth: str = Field(
        "30/minute",
        description="refused API keys per source IP; past it the IP's keys get a 429 "
        "`too_many_failed_authentications` before any lookup (guessing costs no database)",
    )
    rate_limit_key_prefix: str = Field("seedance-bff", description="Redis key prefix of the limits")

    # Per-user budgets, enforced in the database (hold across replicas and restarts)
    user_max_jobs_in_flight: int = Field(10, ge=1, description="queued + running jobs per user")
    user_daily_credit_budget: int = Field(1000, ge=0, description="credits per user per UTC day")

    # Plans: limits by plan name (JSON: name -> Plan); a token names its plan in
    # JWT_PLAN_CLAIM; no plan, or one not in PLANS, is DEFAULT_PLAN
    plans: dict[str, Plan] = Field(
        default_factory=dict,
        description=(
            "limits by plan name (JSON; see [Plans](api.md#plans)); "
            "unset fields take the global settings"
        ),
    )
    default_plan: str = Field(
        "default",
        description=(
            "the plan of a token that names none, or one not in `PLANS` (must be one of them when "
            "`PLANS` is set)"
        ),
    )

    # Moderation (app/moderation, docs/moderation.md): who judges prompts, inputs and results
    moderation_provider: ModerationProvider = Field(
        ModerationProvider.RULES,
        description="`rules` (the patterns below, offline), `openai`, `http` (the product's own "
        "service) or `none`",
    )
    blocked_prompt_patterns: list[str] = Field(
        default_factory=list,
        description="JSON list of regexes refused in prompts (the `rules` provider)",
    )
    moderation_mode: ModerationMode = Field(
        ModerationMode.ENFORCE,
        description="`enforce`, or `observe`: every decision recorded and counted, none applied "
        "(to tune thresholds before enforcing)",
    )
    moderation_fail_mode: ModerationFailMode = Field(
        ModerationFailMode.CLOSED,
        description="with the provider down: `closed` (503 `moderation_unavailable`, nothing "
        "created) or `open` (accepted as `unchecked`, judged before it is sent)",
    )
    moderation_thresholds: dict[str, Threshold] = Field(
        default_factory=dict,
        description='JSON: category -> `{"review": score, "block": score}`; without it, '
        "what the provider flags is refused",
    )
    moderation_timeout_seconds: float = Field(
        5.0, gt=0, description="one call to the moderation provider, connecting included"
    )
    moderation_breaker_failures: int = Field(
        3, ge=1, description="failures in a row that open the breaker around the provider"
    )
    moderation_breaker_reset_seconds: float = Field(
        10.0, gt=0, description="how long that breaker stays open before one probe"
    )
    moderation_openai_base_url: str = Field(
        "https://api.openai.com/v1", description="the `openai` provider's API base"
    )
    moderation_openai_model: str = Field(
        "omni-moderation-latest", description="the `openai` provider's model"
    )
    moderation_openai_api_key: SecretStr | None = Field(
        None, description="the `openai` provider's key (server-side, never logged)"
    )
    moderation_http_url: str | None = Field(
        None, description="the `http` provider: the product's moderation endpoint"
    )
    moderation_http_secret: SecretStr | None = Field(
        None,
        description="the `http` provider: the `whsec_` secret its requests are signed with "
        "(Standard Webhooks, as our outbound webhooks)",
    )
    moderation_recheck_seconds: float = Field(
        15.0, gt=0, description="how often jobs accepted `unchecked` are judged again"
    )
    moderation_strikes_to_suspend: int = Field(
        3, ge=1, description="blocks within the window that suspend a user"
    )
    moderation_strike_window_hours: float = Field(
        24 * 7, gt=0, description="how far back strikes count"
    )
    moderation_output: bool = Field(
        False,
        description="judge each stored result (sampled frames and the prompt) before its owner "
        "sees it; what the provider flags is held for review",
    )
    moderation_output_frames: int = Field(
        4, ge=2, le=16, description="frames sampled for that, evenly, first and last included"
    )
    takedown_retention_hours: float = Field(
        24 * 30,
        ge=0,
        description="a taken-down video's files are kept this long (evidence, admins only), then "
        "removed",
    )
    moderation_upstream_strikes: bool = Field(
        True, description="a refusal by Seedance itself is a strike, as ours are"
    )

    # Credits (app/credits, docs/credits.md): a ledger of balances with holds per job
    credits_ledger: bool = Field(
        False,
        description="hold each job's estimated cost from a balance admins grant (or a payment "
        "tops up), charged on success and refunded on every other end; off: only the daily "
        "budget caps spending (both apply when on)",
    )

    stripe_webhook_secret: SecretStr | None = Field(
        None,
        description="Stripe's signing secret of POST /billing/stripe/webhook (whsec_...): a "
        "paid checkout.session.completed tops up the credits its metadata names; unset: the "
        "route answers 404",
    )

    account_probe_seconds: float = Field(
        30.0,
        gt=0,
        description="while the Seedance account cannot work (402, or our key refused), one "
        "job is sent this often to see whether it can again; the first accepted resumes all",
    )

    # Cost table: credits per second of video, by model and resolution
    cost_per_second: dict[str, dict[str, int]] = Field(
        default_factory=lambda: {m: dict(r) for m, r in DEFAULT_COST_PER_SECOND.items()},
        description="credits per second of video (JSON)",
    )

    # Dispatcher: hands queued jobs to Seedance
    dispatcher_enabled: bool = Field(True, description="run the dispatcher in this process")
    dispatcher_max_in_flight: int = Field(
        8, ge=1, description="concurrent generate calls per process"
    )
    dispatcher_submits_per_second: int = Field(
        10, ge=1, description="global cap on generate calls (across replicas with Redis)"
    )
    dispatcher_poll_seconds: float = Field(
        1.0, gt=0, description="how often it looks for queued jobs (it is also woken on create)"
    )
    dispatcher_max_submit_attempts: int = Field(
        6,
        ge=1,
        description="submissions refused this often fail `upstream_unavailable` "
        "(a 429 is not a refusal: it never counts)",
    )
    dispatcher_retry_backoff_seconds: float = Field(
        5.0, ge=0, description="first delay before re-submitting a refused job (doubles)"
    )
    seedance_max_concurrent_tasks: int | None = Field(
        None,
        ge=1,
        description="the Seedance account's concurrency: jobs being submitted plus rendering "
        "upstream never exceed it, across every replica (unset: learned from the account's 429s)",
    )
    queue_policy: QueuePolicy = Field(
        QueuePolicy.FAIR,
        description="who goes next when jobs wait: `fair` (fewest jobs upstream for the plan's "
        "`queue_weight`, then the oldest job) or `fifo` (the oldest job)",
    )
    queue_probe_seconds: float = Field(
        5.0,
        gt=0,
        description="after a 429 without `Retry-After`, how long before one submission above "
        "the learned cap tries whether the account has room again",
    )
    queue_board_seconds: float = Field(
        2.0,
        gt=0,
        description="how often a replica reads the queue's order for `queue_position` and "
        "the live streams' `queue` events (at most, and only while someone asks)",
    )
    queue_max_wait_seconds: float = Field(
        86400.0,
        gt=0,
        description="a job still waiting for a slot after this long fails `queue_timeout`, "
        "costing nothing",
    )
    submit_unknown_grace_seconds: float = Field(
        900.0,
        gt=0,
        description="how long a job whose submit outcome is unknown waits for its callback",
    )

    # Reconciler: polls only jobs whose callback is overdue
    reconciler_enabled: bool = Field(True, description="run the reconciler in this process")
    reconciler_poll_seconds: float = Field(
        5.0, gt=0, description="how often it looks for overdue jobs"
    )
    callback_overdue_base_seconds: float = Field(
        120.0, ge=0, description="a callback is late after this…"
    )
    callback_overdue_per_video_second: float = Field(
        10.0, ge=0, description="…plus this per second of requested video"
    )
    reconciler_backoff_initial_seconds: float = Field(
        15.0, gt=0, description="delay between status polls of one job (doubles)"
    )
    reconciler_backoff_max_seconds: float = Field(
        600.0, gt=0, description="longest delay between polls of one job"
    )
    reconciler_status_rate_per_second: float = Field(
        5.0, gt=0, description="status calls per second per process"
    )
    job_hard_deadline_seconds: float = Field(
        3600.0, gt=0, description="running jobs with no outcome by then fail `upstream_timeout`"
    )

    # Media: the durable copy of every video (and its poster) in our own storage
    media_backend: MediaBackend = Field(
        MediaBackend.LOCAL,
        description="`local` (a folder, served by the service) or `s3` (any S3-compatible bucket)",
    )
    media_root: str = Field("./media", description="the local backend's folder")
    media_s3_bucket: str | None = Field(None, description="required with `s3`")
    media_s3_endpoint: str | None = Field(None, description="unset for AWS S3")
    media_s3_public_endpoint: str | None = Field(
        None, description="the endpoint browsers reach, when it differs (signing only)"
    )
    media_s3_input_endpoint: str | None = Field(
        None,
        description="the endpoint Seedance fetches uploads from, when it differs from the "
        "public one (signing only; the compose file's simulator reaches MinIO by its name)",
    )
    media_s3_region: str = Field("us-east-1", description="the bucket's region (signing)")
    media_s3_access_key_id: SecretStr | None = Field(
        None, description="with the secret below; unset: the usual AWS credential chain"
    )
    media_s3_secret_access_key: SecretStr | None = Field(
        None, description="never logged or returned"
    )
    media_url_secret: SecretStr = Field(
        SecretStr(DEV_MEDIA_URL_SECRET),
        description="signs the local backend's media URLs (required in production with `local`)",
    )
    media_url_ttl_seconds: int = Field(
        3600, ge=10, le=7 * 24 * 3600, description="lifetime of every signed video and poster URL"
    )
    media_max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="larger results are refused while streaming (`media_too_large`)",
    )
    media_connect_timeout: float = Field(10.0, gt=0, description="seconds, downloading a result")
    media_read_timeout: float = Field(
        60.0, gt=0, description="seconds without a byte before a download counts as broken"
    )
    media_max_redirects: int = Field(5, ge=0, description="each one checked like the first URL")
    media_trusted_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins a result may be downloaded from although not public https "
        "(the simulator in dev, tests and benchmarks); the real API needs none",
    )
    media_worker_enabled: bool = Field(
        True, description="run the media worker (copies, purges, retention) in this process"
    )
    media_copy_concurrency: int = Field(4, ge=1, description="copies at once per process")
    media_probe_seconds: float = Field(
        20.0,
        gt=0,
        description="checking a result (headers, poster frame) in its child process: killed "
        "past this, the result refused `media_invalid`",
    )
    media_probe_memory_bytes: int = Field(
        768 * 1024 * 1024,
        ge=256 * 1024 * 1024,
        description="the probe's child process may map at most this much memory (its "
        "interpreter and FFmpeg take about 130 MB)",
    )
    media_poll_seconds: float = Field(
        1.0, gt=0, description="how often the worker looks for work (it is also woken by callbacks)"
    )
    media_copy_max_attempts: int = Field(
        8, ge=1, description="then the job fails `media_unavailable`"
    )
    media_retry_backoff_seconds: float = Field(
        5.0, ge=0, description="first delay between copy attempts (doubles)"
    )
    media_retry_backoff_max_seconds: float = Field(
        1800.0, ge=0, description="longest delay between copy attempts"
    )
    media_copy_lease_seconds: float = Field(
        900.0, gt=0, description="a claimed copy not finished by then is claimed again"
    )
    media_retention_days: float | None = Field(None, gt=0, description="unset: keep forever")

    # Uploads (app/uploads): the users' own images, reference video and audio
    upload_max_bytes: dict[UploadKind, PositiveInt] = Field(
        default_factory=lambda: dict(DEFAULT_UPLOAD_MAX_BYTES),
        description="largest upload per kind (plans may set their own); larger ones are cut "
        "off while streaming, 413 `upload_too_large`",
    )
    uploads_per_day: int = Field(
        200, ge=1, description="uploads a user may send in any 24 hours (plans may set their own)"
    )
    rate_limit_upload: str = Field("30/minute", description="per user, `POST /uploads`")
    upload_retention_hours: float = Field(
        24.0,
        gt=0,
        description="an upload no job uses is removed this long after it was made; one a job "
        "uses lives as long as a job that is not deleted uses it",
    )
    upload_image_min_side: int = Field(300, ge=1, description="pixels (Seedance's limit)")
    upload_image_max_side: int = Field(6000, ge=1, description="pixels (Seedance's limit)")
    upload_image_min_aspect: float = Field(0.4, gt=0, description="width / height, at least")
    upload_image_max_aspect: float = Field(2.5, gt=0, description="width / height, at most")
    upload_media_min_seconds: float = Field(
        2.0, ge=0, description="reference video and audio: shortest (Seedance's limit)"
    )
    upload_media_max_seconds: float = Field(
        15.0, gt=0, description="reference video and audio: longest (Seedance's limit)"
    )
    upload_video_max_side: int = Field(
        3840, ge=16, description="reference video: longest side in pixels, read before decoding"
    )
    upload_sanitize_seconds: float = Field(
        30.0,
        gt=0,
        description="reading and re-encoding one upload in its child process: killed past "
        "this, the upload refused `upload_invalid`",
    )
    upload_sanitize_memory_bytes: int = Field(
        1024 * MIB,
        ge=256 * MIB,
        description="the sanitizing child process may map at most this much memory",
    )
    upload_sanitize_concurrency: int = Field(
        4,
        ge=1,
        description="uploads read and re-encoded at once per process, at most (fewer when "
        "UPLOAD_SANITIZE_MEMORY_TOTAL_BYTES holds fewer children); one user takes at most "
        "half of them, a user holding none is served next",
    )
    upload_sanitize_memory_total_bytes: int = Field(
        2048 * MIB,
        ge=256 * MIB,
        description="the memory all sanitizing children of a process may map together: each "
        "reserves UPLOAD_SANITIZE_MEMORY_BYTES, so at most this / that run at once (the API "
        "pod's memory limit holds this and the server)",
    )
    upload_sanitize_wait_seconds: float = Field(
        10.0,
        gt=0,
        description="an upload waits this long at most for a sanitizing slot, then 503 `busy` "
        "with Retry-After (its staged bytes removed)",
    )
    uploads_in_progress_per_user: int = Field(
        8,
        ge=1,
        description="uploads of one user being received or read at once per process; the "
        "next is a 429 `too_many_uploads_in_progress` before its body is read",
    )
    uploads_in_progress_per_address: int = Field(
        32,
        ge=1,
        description="the same, from one client address (behind a proxy: FORWARDED_ALLOW_IPS)",
    )
    upload_staging_quota_bytes: int = Field(
        3 * 1024 * MIB,
        ge=MIB,
        description="bytes this process may stage for uploads in progress (originals and clean "
        "copies); the upload that would pass it is a 503 `staging_full`: keep it under the "
        "staging volume (4 GiB in the manifests)",
    )
    upload_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="an upload whose body sends nothing for this long is cut: 408 "
        "`body_timeout`, its staged bytes removed at once",
    )
    upload_max_seconds: float = Field(
        600.0,
        gt=0,
        description="an upload whose body is still arriving after this long (a slow phone's "
        "50 MB takes about 10 minutes) is cut: 408 `body_timeout`",
    )
    upload_sweep_seconds: float = Field(
        300.0, gt=0, description="how often a worker removes expired and deleted uploads"
    )

    # Outbound webhooks (app/outbound): signed deliveries of job outcomes to the product's servers
    outbound_enabled: bool = Field(True, description="run the delivery worker in this process")
    outbound_secrets_key: SecretStr = Field(
        SecretStr(DEV_OUTBOUND_SECRETS_KEY),
        description="encrypts the endpoints' signing secrets at rest",
    )
    outbound_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="how often the worker looks for work (it is also woken by every job move)",
    )
    outbound_timeout_seconds: float = Field(
        10.0, gt=0, description="one attempt, connect to last byte read"
    )
    outbound_retry_schedule: list[float] = Field(
        default_factory=lambda: list(DEFAULT_OUTBOUND_RETRY_SCHEDULE),
        description="seconds before each retry (jittered by 20%); its length + 1 attempts",
    )
    outbound_concurrency: int = Field(32, ge=1, description="deliveries in flight per replica")
    outbound_endpoint_concurrency: int = Field(
        4, ge=1, description="deliveries in flight per endpoint and replica"
    )
    outbound_disable_after_seconds: float = Field(
        5 * 24 * 3600.0, gt=0, description="an endpoint failing this long is disabled"
    )
    outbound_rotation_grace_seconds: float = Field(
        24 * 3600.0, ge=0, description="how long a rotated-out secret keeps signing"
    )

    # Live updates (SSE): heartbeat (from memory), how many streams a user, and this
    # replica, may hold open
    sse_heartbeat_seconds: float = Field(
        15.0,
        gt=0,
        description=(
            "the longest a live stream stays silent: a heartbeat comment line, from memory, after "
            "half to all of it (jittered, so streams opened together do not beat together)"
        ),
    )
    sse_max_streams_per_user: int = Field(
        10,
        ge=1,
        description=(
            "live streams one user may hold open on a replica; the next is a 429 "
            "`too_many_streams` (one `GET /events` follows all of a user's jobs)"
        ),
    )
    sse_max_streams_per_replica: int = Field(
        10_000,
        ge=1,
        description=(
            "live streams a replica holds in all; the next is a 503 `too_many_streams_on_replica` "
            "with `Retry-After`, so one client cannot take a replica's file descriptors"
        ),
    )
    gc_thaw_seconds: float = Field(
        300.0,
        ge=0,
        description=(
            "objects that outlive young garbage collections are frozen out of later ones and "
            "thawed this often, when one full collection walks them all and frees the cyclic "
            "garbage held meanwhile (about 4 objects a request); 0: CPython's own collections "
            "(at 10,000 live streams, a 1.3 s pause at every quarter of growth)"
        ),
    )

    # Retention of what only grows: job moves (a job's latest is kept) and finished
    # webhook messages
    events_retention_days: float | None = Field(None, gt=0, description="unset: keep forever")
    retention_sweep_seconds: float = Field(
        3600.0,
        gt=0,
        description="how often a replica sweeps for what `EVENTS_RETENTION_DAYS` prunes",
    )

    # /admin/stats and the jobs gauge read hours summed once their jobs have all finished
    stats_rollup_enabled: bool = Field(True, description="sum finished hours in this process")
    stats_rollup_seconds: float = Field(
        300.0, gt=0, description="how often the rollup looks for finished hours"
    )

    # Hostile input: size caps on every request (API or webhook)
    max_request_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description=(
            "larger request bodies (API or callbacks) are refused with 413 `body_too_large`"
        ),
    )
    max_request_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="larger header sections are refused with 431 `headers_too_large`",
    )

    # Operations: admin access, docs, metrics, logs
    admin_token: SecretStr | None = Field(
        None, description="a static admin credential (bearer, or the password of HTTP Basic)"
    )
    docs_access: DocsAccess | None = Field(
        None,
        description="who may read `/docs`, `/redoc`, `/openapi.json`: `public`, `admin` or `off`",
        json_schema_extra={"doc_default": "`public` in dev, `admin` in production"},
    )
    metrics_token: SecretStr | None = Field(
        None, description="bearer token for /metrics scrapers (admins may always read it)"
    )
    log_format: LogFormat | None = Field(
        None,
        description="one line per request, with the request id",
        json_schema_extra={"doc_default": "`json` in production, `text` in dev"},
    )
    log_level: str = Field(
        "INFO",
        description="the service's own lines never carry prompts, tokens or the Seedance key",
    )
    playground_enabled: bool | None = Field(
        None,
        description="serve the prompt playground at `/playground/`",
        json_schema_extra={"doc_default": "`true` in dev, `false` in production"},
    )
    review_page_enabled: bool | None = Field(
        None,
        description="serve the moderators' review page at `/review/` (it asks for the admin "
        "token; the API it calls is admin-only either way)",
        json_schema_extra={"doc_default": "`true` in dev, `false` in production"},
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated origins allowed to call the API from a browser",
    )

    @model_validator(mode="before")
    @classmethod
    def _split_origins(cls, data: object) -> object:
        """Accept CORS_ALLOW_ORIGINS and MEDIA_TRUSTED_ORIGINS as comma-separated lists, the
        usual form in env files."""
        if isinstance(data, dict):
            for name in ("cors_allow_origins", "media_trusted_origins"):
                origins = data.get(name)
                if isinstance(origins, str):
                    data[name] = [o.strip() for o in origins.split(",") if o.strip()]
        return data

    @property
    def upload_sanitize_slots(self) -> int:
        """Sanitizing children at once per process: the concurrency, as far as the memory
        budget holds them (each reserves its whole cap)."""
        fits = self.upload_sanitize_memory_total_bytes // self.upload_sanitize_memory_bytes
        return min(self.upload_sanitize_concurrency, fits)

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def effective_docs_access(self) -> DocsAccess:
        if self.docs_access is not None:
            return self.docs_access
        return DocsAccess.ADMIN if self.is_production else DocsAccess.PUBLIC

    @property
    def effective_playground_enabled(self) -> bool:
        return (
            self.playground_enabled
            if self.playground_enabled is not None
            else (not self.is_production)
        )

    @property
    def effective_review_page_enabled(self) -> bool:
        if self.review_page_enabled is not None:
            return self.review_page_enabled
        return not self.is_production

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return LogFormat.JSON if self.is_production else LogFormat.TEXT

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        """Production must never run on the published dev secrets."""
        if self.is_production:
            if self.jwt_algorithm is JwtAlgorithm.HS256 and (
                self.jwt_secret.get_secret_value() == DEV_JWT_SECRET
            ):
                raise ValueError("JWT_SECRET must be set in production")
            if self.callback_secret.get_secret_value() == DEV_CALLBACK_SECRET:
                raise ValueError("CALLBACK_SECRET must be set in production")
            if self.seedance_api_key.get_secret_value() == DEV_SEEDANCE_KEY:
                raise ValueError("SEEDANCE_API_KEY must be set in production")
            if (
                self.media_backend is MediaBackend.LOCAL
                and self.media_url_secret.get_secret_value() == DEV_MEDIA_URL_SECRET
            ):
                raise ValueError("MEDIA_URL_SECRET must be set in production")
            if self.outbound_secrets_key.get_secret_value() == DEV_OUTBOUND_SECRETS_KEY:
                raise ValueError("OUTBOUND_SECRETS_KEY must be set in production")
        if self.media_backend is MediaBackend.S3 and not self.media_s3_bucket:
            raise ValueError("MEDIA_S3_BUCKET is required with MEDIA_BACKEND=s3")
        if self.jwt_algorithm is JwtAlgorithm.RS256 and not self.jwt_public_key:
            raise ValueError("JWT_PUBLIC_KEY is required with JWT_ALGORITHM=RS256")
        limits = (self.rate_limit_create, self.rate_limit_read, self.rate_limit_callback)
        for limit in (*limits, self.rate_limit_failed_auth, self.rate_limit_upload):
            parse_many(limit)  # raises ValueError on a malformed limit
        self._check_plans()
        for pattern in self.blocked_prompt_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"BLOCKED_PROMPT_PATTERNS: {pattern!r} is not a regex: {exc}"
                ) from exc
        if self.moderation_provider is ModerationProvider.OPENAI and not (
            self.moderation_openai_api_key
        ):
            raise ValueError(
                "MODERATION_OPENAI_API_KEY is required with MODERATION_PROVIDER=openai"
            )
        if self.moderation_provider is ModerationProvider.HTTP and not (
            self.moderation_http_url and self.moderation_http_secret
        ):
            raise ValueError(
                "MODERATION_HTTP_URL and MODERATION_HTTP_SECRET are required with "
                "MODERATION_PROVIDER=http"
            )
        if any(delay < 0 for delay in self.outbound_retry_schedule):
            raise ValueError("OUTBOUND_RETRY_SCHEDULE: delays must not be negative")
        if self.upload_sanitize_memory_total_bytes < self.upload_sanitize_memory_bytes:
            raise ValueError(
                "UPLOAD_SANITIZE_MEMORY_TOTAL_BYTES must hold at least one child "
                "(UPLOAD_SANITIZE_MEMORY_BYTES)"
            )
        for model, rates in self.cost_per_second.items():
            if any(rate < 0 for rate in rates.values()):
                raise ValueError(f"negative cost in COST_PER_SECOND for {model}")
        return self

    def _check_plans(self) -> None:
        if self.plans and self.default_plan not in self.plans:
            raise ValueError(f"DEFAULT_PLAN {self.default_plan!r} is not one of PLANS")
        resolutions = {r for rates in self.cost_per_second.values() for r in rates}
        for name, plan in self.plans.items():
            for limit in (plan.rate_limit_create, plan.rate_limit_read, plan.rate_limit_upload):
                if limit is not None:
                    parse_many(limit)
            if unknown := set(plan.models or ()) - set(self.cost_per_second):
                raise ValueError(f"plan {name}: unknown models {sorted(unknown)}")
            if unknown := set(plan.resolutions or ()) - resolutions:
                raise ValueError(f"plan {name}: unknown resolutions {sorted(unknown)}")

    @property
    def upload_request_max_bytes(self) -> int:
        """The largest `POST /uploads` body any plan may send: its largest file and the
        form around it (the route then applies the caller's own caps as the file streams)."""
        caps = [*self.upload_max_bytes.values()]
        caps += [
            size for plan in self.plans.values() for size in (plan.upload_max_bytes or {}).values()
        ]
        return max(caps) + 64 * 1024

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def serves_api(self) -> bool:
        return self.role is not Role.WORKER

    @property
    def runs_loops(self) -> bool:
        """The background loops run here (each still behind its own *_ENABLED)."""
        return self.role is not Role.API

    def callback_overdue_seconds(self, duration: int) -> float:
        """How long after submission a job's callback counts as late (longer videos take longer)."""
        return (
            self.callback_overdue_base_seconds + duration * self.callback_overdue_per_video_second
        )


def _documented_default(name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(documented := extra.get("doc_default"), str):
        return documented
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value == []:
        return "empty"
    if isinstance(value, SecretStr):
        return "dev value"
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, BaseModel | list | dict):
        value = json.dumps(TypeAdapter(type(value)).dump_python(value, mode="json"))
    elif isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


SETTINGS_DOC_HEAD = """# Settings

Every knob is an environment variable (or a line in `.env`), read once into
`app.config.Settings`. In `ENVIRONMENT=production` the service refuses to start with
the dev `JWT_SECRET`, `CALLBACK_SECRET`, `SEEDANCE_API_KEY`, `OUTBOUND_SECRETS_KEY` or (local
media) `MEDIA_URL_SECRET`.

This page is generated from `Settings` (`python -m app.config > docs/settings.md`; a test
checks that it is current), so each line says what the code does.

| variable | default | what |
| --- | --- | --- |
"""


def _old_name(field: FieldInfo) -> str:
    alias = field.validation_alias
    if not isinstance(alias, AliasChoices):
        return ""
    old = ", ".join(f"`{str(choice).upper()}`" for choice in alias.choices[1:])
    return f" (its old name {old} is still read; deprecated)"


def settings_doc() -> str:
    """docs/settings.md: every setting, its default and its description, in `Settings`'s
    order."""
    rows = [
        f"| `{name.upper()}` | {_documented_default(name, field)} | {field.description}"
        f"{_old_name(field)} |"
        for name, field in Settings.model_fields.items()
    ]
    return SETTINGS_DOC_HEAD + "\n".join(rows) + "\n"


if __name__ == "__main__":  # `python -m app.config > docs/settings.md`
    print(settings_doc(), end="")
