"""batches, promotion links, and NOTIFY on every job event (Postgres)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

The trigger publishes each new job_events row on the `job_events` channel in the
transaction that writes it (delivered at commit), so every replica's LISTEN connection
can fan state changes out to its SSE clients, whoever made the change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFY_FUNCTION = """
CREATE FUNCTION notify_job_event() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('job_events', json_build_object(
    'job_id', NEW.job_id,
    'event_id', NEW.id,
    'owner', (SELECT owner FROM jobs WHERE id = NEW.job_id)
  )::text);
  RETURN NEW;
END
$$ LANGUAGE plpgsql
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
FOR EACH ROW EXECUTE FUNCTION notify_job_event()
"""


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint(
            "owner", "idempotency_key", name=op.f("uq_batches_owner_idempotency_key")
        ),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("source_job_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(op.f("fk_jobs_batch_id_batches"), "batches", ["batch_id"], ["id"])
        batch.create_foreign_key(
            op.f("fk_jobs_source_job_id_jobs"), "jobs", ["source_job_id"], ["id"]
        )
        batch.create_index("ix_jobs_batch_id", ["batch_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER job_events_notify ON job_events")
        op.execute("DROP FUNCTION notify_job_event()")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_batch_id")
        batch.drop_constraint(op.f("fk_jobs_source_job_id_jobs"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_jobs_batch_id_batches"), type_="foreignkey")
        batch.drop_column("source_job_id")
        batch.drop_column("batch_id")
    op.drop_table("batches")
