"""outbound messages by age

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26

The retention sweep removes finished webhook messages older than EVENTS_RETENTION_DAYS
in batches: an index on their age finds each batch without reading the whole table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbound_messages_created_at", "outbound_messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbound_messages_created_at", table_name="outbound_messages")
