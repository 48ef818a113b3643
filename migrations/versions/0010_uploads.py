"""the users' own input files

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

- `uploads`: one row per sanitized file a user uploaded (an image, a reference video or
  audio); the object in storage is named by its id. `remove_at` marks a row whose object
  is to be removed (set ahead while the object is being stored); the row goes after it.
- `job_uploads`: which uploads each job uses (an upload lives as long as a job that is not
  deleted uses it, else until its `expires_at`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("remove_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    op.create_index("ix_uploads_owner_created_at", "uploads", ["owner", "created_at", "id"])
    op.create_index("ix_uploads_expires_at", "uploads", ["expires_at"])
    op.create_index("ix_uploads_remove_at", "uploads", ["remove_at"])
    op.create_table(
        "job_uploads",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("upload_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_uploads_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["uploads.id"],
            name=op.f("fk_job_uploads_upload_id_uploads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "upload_id", name=op.f("pk_job_uploads")),
    )
    op.create_index(op.f("ix_job_uploads_upload_id"), "job_uploads", ["upload_id"])


def downgrade() -> None:
    op.drop_table("job_uploads")
    op.drop_table("uploads")
