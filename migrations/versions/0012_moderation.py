"""moderation: decisions, reports, the review queue, strikes and suspensions

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

- `jobs.moderation_*`: a job's standing beside its status (clear when unset; unchecked,
  held, blocked, taken down), the stage and source of the decision and its categories.
- `moderation_events`: the append-only history (decisions, reports, appeals, strikes).
- `moderation_cases`: the review queue, one row per job waiting for a human.
- `moderation_reports`: one open report per reporter and job.
- `suspensions`: users who may not create; `taken_down_files`: sha256 of removed videos.
- `outbound_events` may be about a user (`user.suspended`): no job, a subject.
- the outbox trigger on `job_events` skips events that do not move the status (a
  moderation change, from = to: live streams carry it, webhooks have their own event).
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_ENABLED_ENDPOINT = "EXISTS (SELECT 1 FROM outbound_endpoints WHERE enabled)"
_OUTBOX_INSERT = (
    "INSERT INTO outbound_events (type, job_id, job_event_id, at) "
    "VALUES ('job.' || NEW.to_status, NEW.job_id, NEW.id, NEW.at)"
)
# migration 0005's trigger, and the condition it gains here
_MOVES_ONLY = {
    "postgresql": "NEW.from_status IS DISTINCT FROM NEW.to_status",
    "sqlite": "NEW.from_status IS NOT NEW.to_status",
}


def _outbox_trigger(moves_only: bool) -> None:
    dialect = op.get_bind().dialect.name
    condition = _MOVES_ONLY[dialect] if moves_only else None
    if dialect == "postgresql":
        op.execute("DROP TRIGGER job_events_outbox ON job_events")
        when = f"WHEN ({condition})" if condition else ""
        op.execute(
            f"CREATE TRIGGER job_events_outbox AFTER INSERT ON job_events FOR EACH ROW {when} "
            "EXECUTE FUNCTION job_events_outbox()"
        )
    else:
        op.execute("DROP TRIGGER job_events_outbox")
        when = " AND ".join(c for c in (condition, _ENABLED_ENDPOINT) if c)
        op.execute(
            f"CREATE TRIGGER job_events_outbox AFTER INSERT ON job_events WHEN {when} "
            f"BEGIN {_OUTBOX_INSERT}; END"
        )


@contextmanager
def _rebuilt(name: str) -> Iterator[BatchOperations]:
    """Alter a table; SQLite rebuilds it under a new name, which the triggers naming it
    (migration 0005's) must not be checked against midway (legacy ALTER TABLE semantics)."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("PRAGMA legacy_alter_table = ON")
    with op.batch_alter_table(name) as table:
        yield table
    if sqlite:
        op.execute("PRAGMA legacy_alter_table = OFF")


def upgrade() -> None:
    _outbox_trigger(moves_only=True)
    with _rebuilt("outbound_events") as table:
        table.alter_column("job_id", existing_type=sa.Uuid(), nullable=True)
        table.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
    op.create_table(
        "moderation_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=8), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("strike", sa.Boolean(), nullable=False),
        sa.Column("forgiven_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_events")),
    )
    op.create_index(
        "ix_moderation_events_job_id_id", "moderation_events", ["job_id", "id"], unique=False
    )
    op.create_index(
        "ix_moderation_events_subject_strike",
        "moderation_events",
        ["subject", "strike", "at"],
        unique=False,
    )
    op.create_table(
        "suspensions",
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_suspensions")),
    )
    op.create_table(
        "taken_down_files",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_taken_down_files")),
    )
    op.create_table(
        "moderation_cases",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("rank_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("appealed", sa.Boolean(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_moderation_cases_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_moderation_cases")),
    )
    op.create_index(
        "ix_moderation_cases_queue",
        "moderation_cases",
        ["closed_at", "rank_at", "job_id"],
        unique=False,
    )
    op.create_table(
        "moderation_reports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("reporter", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_moderation_reports_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_reports")),
    )
    op.create_index(
        "ix_moderation_reports_open",
        "moderation_reports",
        ["job_id", "reporter"],
        unique=True,
        postgresql_where=sa.text("closed_at IS NULL"),
        sqlite_where=sa.text("closed_at IS NULL"),
    )
    op.add_column("jobs", sa.Column("moderation_state", sa.String(length=16), nullable=True))
    op.add_column("jobs", sa.Column("moderation_stage", sa.String(length=8), nullable=True))
    op.add_column("jobs", sa.Column("moderation_source", sa.String(length=16), nullable=True))
    op.add_column(
        "jobs",
        sa.Column(
            "moderation_categories", sa.JSON(), nullable=False, server_default=sa.text("'[]'")
        ),
    )


def downgrade() -> None:
    op.execute("DELETE FROM outbound_events WHERE job_id IS NULL")
    with _rebuilt("outbound_events") as table:
        table.drop_column("subject")
        table.alter_column("job_id", existing_type=sa.Uuid(), nullable=False)
    _outbox_trigger(moves_only=False)
    op.drop_column("jobs", "moderation_categories")
    op.drop_column("jobs", "moderation_source")
    op.drop_column("jobs", "moderation_stage")
    op.drop_column("jobs", "moderation_state")
    op.drop_index(
        "ix_moderation_reports_open",
        table_name="moderation_reports",
        postgresql_where=sa.text("closed_at IS NULL"),
        sqlite_where=sa.text("closed_at IS NULL"),
    )
    op.drop_table("moderation_reports")
    op.drop_index("ix_moderation_cases_queue", table_name="moderation_cases")
    op.drop_table("moderation_cases")
    op.drop_table("taken_down_files")
    op.drop_table("suspensions")
    op.drop_index("ix_moderation_events_subject_strike", table_name="moderation_events")
    op.drop_index("ix_moderation_events_job_id_id", table_name="moderation_events")
    op.drop_table("moderation_events")
