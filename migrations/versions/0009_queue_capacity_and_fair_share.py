"""the account's capacity, fair share and slot notices

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

- `jobs.plan`: the owner's plan when the job was created (its weight in the fair share).
- `job_stats_hours.queue_seconds`: times in the queue, a histogram like `success_seconds`
  (hours summed before are empty).
- `upstream_capacity`: one row, what every replica knows of the Seedance account's
  concurrency: the cap learned from its 429s and when to probe above it.
- `ix_jobs_upstream`: the jobs holding one of the account's slots (being submitted, or
  rendering upstream), counted on every claim; `ix_jobs_owner_sent`: when each owner was
  last sent a job (fair share's turns).
- On Postgres, a trigger NOTIFYs `upstream_slots` when a job leaves a slot (its task
  finished, failed, or its submission came back unsent), so every replica's dispatcher
  fills the slot at once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOLDS_SLOT = (
    "(status = 'queued' AND submit_started_at IS NOT NULL)"
    " OR (status = 'running' AND media_status IS NULL)"
)
SLOT_FUNCTION = """
CREATE FUNCTION notify_upstream_slot() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('upstream_slots', '');
  RETURN NEW;
END
$$ LANGUAGE plpgsql
"""
SLOT_TRIGGER = """
CREATE TRIGGER jobs_upstream_slot_notify
AFTER UPDATE OF status, media_status, submit_started_at ON jobs
FOR EACH ROW
WHEN (
  ((OLD.status = 'queued' AND OLD.submit_started_at IS NOT NULL)
    OR (OLD.status = 'running' AND OLD.media_status IS NULL))
  AND NOT ((NEW.status = 'queued' AND NEW.submit_started_at IS NOT NULL)
    OR (NEW.status = 'running' AND NEW.media_status IS NULL))
)
EXECUTE FUNCTION notify_upstream_slot()
"""


def upgrade() -> None:
    # a plain ADD COLUMN, also on SQLite: a batch copy of `jobs` would drop its triggers
    op.add_column("jobs", sa.Column("plan", sa.String(length=64), nullable=True))
    op.add_column(
        "job_stats_hours",
        sa.Column("queue_seconds", sa.JSON(), nullable=False, server_default="{}"),
    )
    op.create_index(
        "ix_jobs_upstream",
        "jobs",
        ["owner"],
        postgresql_where=sa.text(HOLDS_SLOT),
        sqlite_where=sa.text(HOLDS_SLOT),
    )
    op.create_index("ix_jobs_owner_sent", "jobs", ["owner", "submit_started_at"])
    op.create_table(
        "upstream_capacity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("learned_cap", sa.Integer(), nullable=True),
        sa.Column("probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rate_limited_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_capacity")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SLOT_FUNCTION)
        op.execute(SLOT_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER jobs_upstream_slot_notify ON jobs")
        op.execute("DROP FUNCTION notify_upstream_slot()")
    op.drop_table("upstream_capacity")
    op.drop_index("ix_jobs_owner_sent", table_name="jobs")
    op.drop_index("ix_jobs_upstream", table_name="jobs")
    op.drop_column("job_stats_hours", "queue_seconds")
    op.drop_column("jobs", "plan")
