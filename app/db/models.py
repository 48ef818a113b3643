"""The database of record: `jobs` and their append-only history `job_events`, and the
outbound webhooks: endpoints, the outbox, messages and their attempts.

One schema serves Postgres (production) and SQLite (laptop default); `UTCDateTime`
keeps timestamps timezone-aware on both.
"""

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# A job holding one of the Seedance account's slots: being submitted (its outcome may be a
# task), or rendering upstream (its report not in yet). Its index and the scheduler's
# counts use this one text, so Postgres matches the partial index.
HOLDS_SLOT_SQL = (
    "(status = 'queued' AND submit_started_at IS NOT NULL)"
    " OR (status = 'running' AND media_status IS NULL)"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    # every model here maps one Table (core statements use it as such)
    __table__: ClassVar[Table]
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, list[str]: JSON}


class Batch(Base):
    """Prompt variants created together, to compare side by side."""

    __tablename__ = "batches"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key"),
        # GET /jobs: the caller's jobs newest first, optionally by status (keyset pagination)
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_owner_status_created", "owner", "status", "created_at", "id"),
        # admin lists (all users, time ranges; by status) and the dispatcher's claim
        # (oldest queued first); the reconciler's claim (most overdue first)
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at", "id"),
        Index("ix_jobs_status_next_poll", "status", "next_poll_at"),
        Index("ix_jobs_batch_id", "batch_id"),
        # the media worker's claims: copies due, objects to purge, stored media past retention
        Index("ix_jobs_media_status_next_attempt", "media_status", "media_next_attempt_at"),
        # fair share's turns: when each owner's latest job was sent (app/jobs/scheduler.py)
        Index("ix_jobs_owner_sent", "owner", "submit_started_at"),
        # upstream spend by the day Seedance took each job (/admin/stats' forecast)
        Index("ix_jobs_submitted", "submitted_at"),
        # the jobs holding one of the Seedance account's slots, counted by owner on every
        # claim (app/jobs/scheduler.py: HOLDS_SLOT says the same)
        Index(
            "ix_jobs_upstream",
            "owner",
            postgresql_where=text(HOLDS_SLOT_SQL),
            sqlite_where=text(HOLDS_SLOT_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(255))
    # the owner's plan when the job was created: its weight in the queue's fair share
    plan: Mapped[str | None] = mapped_column(String(64))
    # validated request
    model: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[int] = mapped_column(Integer)
    resolution: Mapped[str] = mapped_column(String(8))
    aspect_ratio: Mapped[str] = mapped_column(String(16))
    images: Mapped[list[str]] = mapped_column(default=list)
    reference_video_urls: Mapped[list[str]] = mapped_column(default=list)
    reference_audio_urls: Mapped[list[str]] = mapped_column(default=list)
    estimated_cost: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id"))
    source_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # lifecycle
    status: Mapped[str] = mapped_column(String(16))
    upstream_task_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    # the temporary result URL Seedance reported (expires within about a day)
    upstream_video_url: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # dispatcher bookkeeping: submit_started_at is set (and committed) before the upstream
    # call and cleared only when the call certainly did not reach Seedance.
    submit_attempts: Mapped[int] = mapped_column(Integer, default=0)
    submit_started_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    # reconciler bookkeeping: when to ask upstream if no callback has come
    next_poll_at: Mapped[datetime | None]
    status_polls: Mapped[int] = mapped_column(Integer, default=0)
    # the durable copy in our storage (app/media): see MediaStatus for the life of these
    media_status: Mapped[str | None] = mapped_column(String(16))
    media_attempts: Mapped[int] = mapped_column(Integer, default=0)
    media_next_attempt_at: Mapped[datetime | None]  # backoff, and the lease of a claimed copy
    media_error: Mapped[str | None] = mapped_column(Text)
    media_content_type: Mapped[str | None] = mapped_column(String(64))
    media_bytes: Mapped[int | None] = mapped_column(BigInteger)
    media_sha256: Mapped[str | None] = mapped_column(String(64))
    media_width: Mapped[int | None] = mapped_column(Integer)
    media_height: Mapped[int | None] = mapped_column(Integer)
    media_duration: Mapped[float | None] = mapped_column(Float)
    media_frame_rate: Mapped[float | None] = mapped_column(Float)
    media_video_codec: Mapped[str | None] = mapped_column(String(32))
    media_has_audio: Mapped[bool | None] = mapped_column(Boolean)
    media_mismatch: Mapped[str | None] = mapped_column(Text)  # what differs from the request
    media_stored_at: Mapped[datetime | None]
    # DELETE /jobs/{id}: prompt, inputs and media are gone; the row stays for accounting
    deleted_at: Mapped[datetime | None]
    # moderation (app/moderation), beside the status: None is clear; see ModerationState
    moderation_state: Mapped[str | None] = mapped_column(String(16))
    moderation_stage: Mapped[str | None] = mapped_column(String(8))  # input | output
    moderation_source: Mapped[str | None] = mapped_column(String(16))  # provider | upstream | admin
    moderation_categories: Mapped[list[str]] = mapped_column(default=list)
    # the credits ledger (app/credits): held at create, then charged or refunded with the
    # job's last move (a trigger, in that move's transaction); None: no ledger
    credit_state: Mapped[str | None] = mapped_column(String(8))


class UpstreamCapacity(Base):
    """One row (id 1): what every replica knows of the Seedance account's concurrency,
    learned from its 429s (app/jobs/scheduler.py)."""

    __tablename__ = "upstream_capacity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    learned_cap: Mapped[int | None] = mapped_column(Integer)  # tasks it takes at once
    probe_at: Mapped[datetime | None]  # from then, one submission may go above the cap
    rate_limited_at: Mapped[datetime | None]  # its last 429
    # the account cannot work (Seedance's 402, or our key refused): dispatch pauses for
    # everyone until a probe (one job, every ACCOUNT_PROBE_SECONDS) is accepted
    paused_reason: Mapped[str | None] = mapped_column(String(32))
    paused_since: Mapped[datetime | None]
    resume_probe_at: Mapped[datetime | None]
    # the account's balance as an operator last recorded it (POST /admin/account/credits)
    account_credits: Mapped[int | None] = mapped_column(BigInteger)
    account_credits_at: Mapped[datetime | None]


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class JobStatsHour(Base):
    """`/admin/stats` figures of the jobs created in one hour, written once every one of
    them has finished (app/jobs/stats.py), so a window of days reads its hours instead of
    every job in it. Durations to success are a histogram: bucket (as text) -> jobs."""

    __tablename__ = "job_stats_hours"

    hour: Mapped[datetime] = mapped_column(primary_key=True)
    jobs_by_status: Mapped[dict[str, int]] = mapped_column(JSON)
    resolved_by: Mapped[dict[str, int]] = mapped_column(JSON)
    media_mismatches: Mapped[int] = mapped_column(Integer)
    credits: Mapped[int] = mapped_column(BigInteger)
    success_seconds: Mapped[dict[str, int]] = mapped_column(JSON)
    # from creation to the accepted submission, the same buckets (migration 0009)
    queue_seconds: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


class OutboundEndpoint(Base):
    """A server of the product that receives signed webhooks (app/outbound)."""

    __tablename__ = "outbound_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(500))
    events: Mapped[list[str]] = mapped_column(default=list)
    include_prompts: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # signing secrets, encrypted at rest; the previous one signs too until it expires
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    # failing since the first failed attempt after a success; disabled past a limit
    failing_since: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboundEvent(Base):
    """The outbox: what happened and must be told to the endpoints, written in the
    transaction that made it happen (a trigger on `job_events`, or the deletion itself)
    and turned into one message per subscribed endpoint by the delivery worker."""

    __tablename__ = "outbound_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    type: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # None: an event about a user
    subject: Mapped[str | None] = mapped_column(String(255))  # that user (`user.suspended`)
    job_event_id: Mapped[int | None] = mapped_column(BigInteger)
    # the facts of an event about no job and no user (`account.paused`), frozen when it happened
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboundMessage(Base):
    """One event for one endpoint: signed and sent until it is delivered or given up."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        # one message per event and endpoint, however often the event is fanned out
        UniqueConstraint("endpoint_id", "dedupe_key"),
        # the worker's claim (an endpoint's due messages) and the admin's list
        Index(
            "ix_outbound_messages_endpoint_status_next", "endpoint_id", "status", "next_attempt_at"
        ),
        Index("ix_outbound_messages_endpoint_created", "endpoint_id", "created_at", "id"),
        # deleting a job forgets its prompt in the messages about it
        Index("ix_outbound_messages_job_id", "job_id"),
        Index("ix_outbound_messages_batch_id", "batch_id"),
        # the retention sweep's batches, oldest first
        Index("ix_outbound_messages_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("outbound_endpoints.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(80))
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # of batch.completed
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]  # when due; while an attempt runs, its lease
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class OutboundAttempt(Base):
    """One try at sending a message, as the operator sees it in the deliveries list."""

    __tablename__ = "outbound_attempts"
    __table_args__ = (Index("ix_outbound_attempts_message_id", "message_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("outbound_messages.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    result: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)  # its first KB


class ApiKey(Base):
    """A service API key of the product's servers: only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(32))  # the first characters, to recognise it
    subject: Mapped[str] = mapped_column(String(255))
    plan: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Upload(Base):
    """A user's own input file (an image, a reference video or audio), sanitized and
    stored. `remove_at` set: the upload is gone for its owner, and its object, then its
    row, are removed once that time has passed (set ahead while its object is being
    stored, so an upload cut by a crash is removed, never left half made)."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_owner_created_at", "owner", "created_at", "id"),
        Index("ix_uploads_expires_at", "expires_at"),
        Index("ix_uploads_remove_at", "remove_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # image | video | audio
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]  # unless a job that is not deleted uses it
    remove_at: Mapped[datetime | None]


class JobUpload(Base):
    """Which uploads a job uses: an upload lives while a job that is not deleted uses it."""

    __tablename__ = "job_uploads"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    upload_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ModerationEvent(Base):
    """The append-only history of moderation: decisions (by a provider, by Seedance, by an
    admin), reports, appeals, strikes and suspensions; who, when, why. Never holds a
    prompt; an erased user's rows stay under their pseudonym (evidence) with their own
    words (an appeal's statement) cleared."""

    __tablename__ = "moderation_events"
    __table_args__ = (
        Index("ix_moderation_events_job_id_id", "job_id", "id"),
        # strikes within the window, by subject
        Index("ix_moderation_events_subject_strike", "subject", "strike", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # none: a create refused whole
    subject: Mapped[str] = mapped_column(String(255))  # whose content (the job's owner)
    kind: Mapped[str] = mapped_column(String(16))  # ModerationEventKind
    stage: Mapped[str | None] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16))  # provider name, upstream, admin, user
    verdict: Mapped[str | None] = mapped_column(String(8))  # allow | review | block
    categories: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))  # the admin, reporter or owner
    note: Mapped[str | None] = mapped_column(Text)  # an admin's note, a report's comment
    strike: Mapped[bool] = mapped_column(Boolean, default=False)
    forgiven_at: Mapped[datetime | None]  # a strike forgiven when its suspension was lifted
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ModerationCase(Base):
    """A job waiting for a human (held, reported or appealed): one row per job, the review
    queue's entry; `closed_at` set once an admin decided."""

    __tablename__ = "moderation_cases"
    # the queue, open cases first by rank (app/moderation/review.py)
    __table_args__ = (Index("ix_moderation_cases_queue", "closed_at", "rank_at", "job_id"),)

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    subject: Mapped[str] = mapped_column(String(255))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # opened_at moved earlier by its priority: the queue's one sort key, so a page is a
    # keyset range
    rank_at: Mapped[datetime] = mapped_column(default=utcnow)
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    reports: Mapped[int] = mapped_column(Integer, default=0)
    appealed: Mapped[bool] = mapped_column(Boolean, default=False)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    closed_at: Mapped[datetime | None]


class ModerationReport(Base):
    """One report of a job by one reporter; one open report per reporter and job."""

    __tablename__ = "moderation_reports"
    __table_args__ = (
        Index(
            "ix_moderation_reports_open",
            "job_id",
            "reporter",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    reporter: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]


class Suspension(Base):
    """A suspended user: no creates, batches, promotes or uploads until lifted or `until`."""

    __tablename__ = "suspensions"

    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    reason: Mapped[str] = mapped_column(String(255))
    since: Mapped[datetime] = mapped_column(default=utcnow)
    until: Mapped[datetime | None]
    by: Mapped[str] = mapped_column(String(64))  # strikes | admin


class TakenDownFile(Base):
    """The sha256 of a taken-down video: the same file cannot come back as an upload."""

    __tablename__ = "taken_down_files"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class CreditAccount(Base):
    """A balance in the double-entry ledger: a user's (`user:<random hex>`, found by its
    `subject`) or the service's (`system:grants`, `system:topups`, `system:revenue`,
    `system:adjustments`). Money is only
    ever moved by a transfer, debiting one account and crediting another. A user's account
    is never overdrawn: the database refuses it (`never_overdrawn`), whatever the code."""

    __tablename__ = "credit_accounts"
    __table_args__ = (
        CheckConstraint(
            "kind <> 'user' OR credits_posted - debits_posted - debits_pending >= 0",
            name="never_overdrawn",
        ),
        CheckConstraint(
            "credits_posted >= 0 AND debits_posted >= 0 AND debits_pending >= 0",
            name="totals_not_negative",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # names no one
    kind: Mapped[str] = mapped_column(String(8))  # user | system
    subject: Mapped[str | None] = mapped_column(String(255), unique=True)  # a user's
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)  # holds
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # a user's plan grant: the month it was last made ("2026-12") and its amount; what is
    # left of it at the month's end expires (app/credits/monthly.py)
    period: Mapped[str | None] = mapped_column(String(7))
    period_grant: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class CreditTransfer(Base):
    """One movement of credits. A hold is pending (it counts against the balance) until it
    is posted (charged) or voided (released), exactly once: the charge or release is a
    transfer of its own pointing at the hold. `idempotency_key` is unique: a replayed grant
    or a second settlement of a job moves nothing."""

    __tablename__ = "credit_transfers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        # the settlement trigger's lookup: a job's pending hold
        Index("ix_credit_transfers_job_kind_state", "job_id", "kind", "state"),
        # a user's transactions, newest first
        Index("ix_credit_transfers_user_created", "user_account", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    idempotency_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # TransferKind
    debit_account: Mapped[str] = mapped_column(String(64), ForeignKey("credit_accounts.id"))
    credit_account: Mapped[str] = mapped_column(String(64), ForeignKey("credit_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(8))  # pending | posted | voided
    pending_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # the hold it settles
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    note: Mapped[str | None] = mapped_column(Text)
    user_account: Mapped[str | None] = mapped_column(String(64))  # whose statement it is on
    balance_after: Mapped[int | None] = mapped_column(BigInteger)  # that user's available
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ErasureMark(Base):
    """A subject being erased, or erased within the hour (by a digest of it): a create or
    an upload that began before the erasure finished is refused when it would commit, so
    nothing in flight lands under an erased subject. Removed an hour after."""

    __tablename__ = "erasure_marks"

    subject_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
