"""indexes for admin lists and the dispatcher's claim

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Found by `bench/explain.py` on 50,000 jobs: the admin list over all users and its time
range filter read the whole table and sorted it; the admin status filter and the
dispatcher's claim (oldest queued first) sorted a bitmap scan. (status, created_at, id)
serves both in index order and supersedes (status, next_attempt_at).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.create_index("ix_jobs_created", ["created_at", "id"])
        batch.create_index("ix_jobs_status_created", ["status", "created_at", "id"])
        batch.drop_index("ix_jobs_status_next_attempt")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.create_index("ix_jobs_status_next_attempt", ["status", "next_attempt_at"])
        batch.drop_index("ix_jobs_status_created")
        batch.drop_index("ix_jobs_created")
