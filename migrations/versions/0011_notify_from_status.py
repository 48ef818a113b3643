"""the move's from-status in each job_events NOTIFY (Postgres)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

Each replica keeps places in line between readings of the queue: a move whose from-status
is `queued` takes its job out of the line at once. The notice says so, so no replica has
to read the move to know it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION notify_job_event() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('job_events', json_build_object(
    'job_id', NEW.job_id,
    'event_id', NEW.id,
    'owner', (SELECT owner FROM jobs WHERE id = NEW.job_id){from_status}
  )::text);
  RETURN NEW;
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION.format(from_status=",\n    'from_status', NEW.from_status"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION.format(from_status=""))
