"""erasure marks: work in flight for an erased subject is refused, not landed

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

`erasure_marks`: a digest of each subject being erased or erased within the hour, with
when its erasure began and ended (app/jobs/erasure_marks.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasure_marks",
        sa.Column("subject_digest", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject_digest", name=op.f("pk_erasure_marks")),
    )


def downgrade() -> None:
    op.drop_table("erasure_marks")
