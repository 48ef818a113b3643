"""durable media copies, their metadata, and job deletion

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

`jobs.video_url` held Seedance's temporary result URL; it becomes `upstream_video_url`,
and the copy in our own storage gets its own columns (status, retries, metadata). Jobs
that succeeded before this revision still have only the upstream URL: they are queued
for a copy (the worker records the ones whose URL has expired as unavailable).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MEDIA_COLUMNS = (
    sa.Column("media_status", sa.String(length=16), nullable=True),
    sa.Column("media_attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("media_next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("media_error", sa.Text(), nullable=True),
    sa.Column("media_content_type", sa.String(length=64), nullable=True),
    sa.Column("media_bytes", sa.BigInteger(), nullable=True),
    sa.Column("media_sha256", sa.String(length=64), nullable=True),
    sa.Column("media_width", sa.Integer(), nullable=True),
    sa.Column("media_height", sa.Integer(), nullable=True),
    sa.Column("media_duration", sa.Float(), nullable=True),
    sa.Column("media_frame_rate", sa.Float(), nullable=True),
    sa.Column("media_video_codec", sa.String(length=32), nullable=True),
    sa.Column("media_has_audio", sa.Boolean(), nullable=True),
    sa.Column("media_mismatch", sa.Text(), nullable=True),
    sa.Column("media_stored_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("video_url", new_column_name="upstream_video_url")
        for column in MEDIA_COLUMNS:
            batch.add_column(column)
        batch.create_index(
            "ix_jobs_media_status_next_attempt", ["media_status", "media_next_attempt_at"]
        )
    op.execute(
        "UPDATE jobs SET media_status = 'pending' "
        "WHERE status = 'succeeded' AND upstream_video_url IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_media_status_next_attempt")
        for column in reversed(MEDIA_COLUMNS):
            batch.drop_column(column.name)
        batch.alter_column("upstream_video_url", new_column_name="video_url")
