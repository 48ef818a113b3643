"""job stats by hour

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

`/admin/stats` over a window of days read every job in it (3.4 million for 31 days at
100,000 jobs a day). Each hour whose jobs have all finished is summed once into a row
here, and the stats read those rows plus the few jobs not yet summed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_stats_hours",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("jobs_by_status", sa.JSON(), nullable=False),
        sa.Column("resolved_by", sa.JSON(), nullable=False),
        sa.Column("media_mismatches", sa.Integer(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("success_seconds", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_job_stats_hours")),
    )


def downgrade() -> None:
    op.drop_table("job_stats_hours")
