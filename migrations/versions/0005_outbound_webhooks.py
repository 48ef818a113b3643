"""outbound webhooks: endpoints, the outbox, messages and attempts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

Triggers write the outbox row of each job move (an insert into `job_events`) and of each
deletion (`jobs.deleted_at` set) in the transaction that makes it, on Postgres and SQLite
alike: no code path that moves or deletes a job can forget to tell the endpoints, and a
crash after the commit loses nothing. While no endpoint is enabled they write nothing (a
deletion: while none exists).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENABLED_ENDPOINT = "EXISTS (SELECT 1 FROM outbound_endpoints WHERE enabled)"
_ANY_ENDPOINT = "EXISTS (SELECT 1 FROM outbound_endpoints)"
_DELETION = "OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL"
# (trigger, table and event, row condition, endpoint condition, the outbox row's values);
# a deletion is written while any endpoint exists: its fan-out also removes the prompt from
# the messages already stored about the job, a disabled endpoint's included
TRIGGERS = (
    (
        "job_events_outbox",
        "INSERT ON job_events",
        None,
        _ENABLED_ENDPOINT,
        "'job.' || NEW.to_status, NEW.job_id, NEW.id, NEW.at",
    ),
    (
        "jobs_deleted_outbox",
        "UPDATE OF deleted_at ON jobs",
        _DELETION,
        _ANY_ENDPOINT,
        "'job.deleted', NEW.id, NULL, NEW.deleted_at",
    ),
)
_INSERT = "INSERT INTO outbound_events (type, job_id, job_event_id, at) VALUES ({values})"


def _create_triggers(dialect: str) -> None:
    for name, on, condition, endpoints, values in TRIGGERS:
        insert = _INSERT.format(values=values)
        if dialect == "postgresql":
            op.execute(
                f"""
                CREATE FUNCTION {name}() RETURNS trigger AS $$
                BEGIN
                  IF {endpoints} THEN {insert}; END IF;
                  RETURN NEW;
                END
                $$ LANGUAGE plpgsql
                """
            )
            when = f"WHEN ({condition})" if condition else ""
            op.execute(
                f"CREATE TRIGGER {name} AFTER {on} FOR EACH ROW {when} EXECUTE FUNCTION {name}()"
            )
        else:
            when = " AND ".join(c for c in (condition, endpoints) if c)
            op.execute(f"CREATE TRIGGER {name} AFTER {on} WHEN {when} BEGIN {insert}; END")


def _drop_triggers(dialect: str) -> None:
    for name, on, *_ in TRIGGERS:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER {name} ON {on.split(' ON ')[1]}")
            op.execute(f"DROP FUNCTION {name}()")
        else:
            op.execute(f"DROP TRIGGER {name}")


def upgrade() -> None:
    op.create_table(
        "outbound_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("include_prompts", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_endpoints")),
    )
    op.create_table(
        "outbound_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("job_event_id", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_events")),
    )
    op.create_table(
        "outbound_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("dedupe_key", sa.String(length=80), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["outbound_endpoints.id"],
            name=op.f("fk_outbound_messages_endpoint_id_outbound_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_messages")),
        sa.UniqueConstraint(
            "endpoint_id", "dedupe_key", name=op.f("uq_outbound_messages_endpoint_id_dedupe_key")
        ),
    )
    op.create_index(
        "ix_outbound_messages_endpoint_status_next",
        "outbound_messages",
        ["endpoint_id", "status", "next_attempt_at"],
    )
    op.create_index(
        "ix_outbound_messages_endpoint_created",
        "outbound_messages",
        ["endpoint_id", "created_at", "id"],
    )
    op.create_index("ix_outbound_messages_job_id", "outbound_messages", ["job_id"])
    op.create_index("ix_outbound_messages_batch_id", "outbound_messages", ["batch_id"])
    op.create_table(
        "outbound_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["outbound_messages.id"],
            name=op.f("fk_outbound_attempts_message_id_outbound_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_attempts")),
    )
    op.create_index("ix_outbound_attempts_message_id", "outbound_attempts", ["message_id", "id"])
    _create_triggers(op.get_bind().dialect.name)


def downgrade() -> None:
    _drop_triggers(op.get_bind().dialect.name)
    op.drop_index("ix_outbound_attempts_message_id", table_name="outbound_attempts")
    op.drop_table("outbound_attempts")
    op.drop_index("ix_outbound_messages_batch_id", table_name="outbound_messages")
    op.drop_index("ix_outbound_messages_job_id", table_name="outbound_messages")
    op.drop_index("ix_outbound_messages_endpoint_created", table_name="outbound_messages")
    op.drop_index("ix_outbound_messages_endpoint_status_next", table_name="outbound_messages")
    op.drop_table("outbound_messages")
    op.drop_table("outbound_events")
    op.drop_table("outbound_endpoints")
