"""account events, the Seedance account's recorded balance, monthly credits

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

- `outbound_events.data`: the facts of an event about no job and no user
  (`account.paused`, `account.resumed`), frozen when it happened.
- `upstream_capacity.account_credits(_at)`: the Seedance account's balance an operator
  recorded, and when; `/admin/stats` forecasts from it.
- `ix_jobs_submitted`: upstream spend by the day Seedance took each job.
- `credit_accounts.period` and `period_grant`: the month of a user's last plan grant and
  its amount (what is left of it expires at the month's end); the `system:expired` account.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbound_events", sa.Column("data", sa.JSON(), nullable=True))
    op.add_column("upstream_capacity", sa.Column("account_credits", sa.BigInteger(), nullable=True))
    op.add_column(
        "upstream_capacity",
        sa.Column("account_credits_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_jobs_submitted", "jobs", ["submitted_at"], unique=False)
    op.add_column("credit_accounts", sa.Column("period", sa.String(length=7), nullable=True))
    op.add_column(
        "credit_accounts",
        sa.Column("period_grant", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "credit_accounts",
            sa.column("id", sa.String),
            sa.column("kind", sa.String),
            sa.column("credits_posted", sa.BigInteger),
            sa.column("debits_posted", sa.BigInteger),
            sa.column("debits_pending", sa.BigInteger),
            sa.column("updated_at", sa.DateTime(timezone=True)),
        ),
        [
            {
                "id": "system:expired",
                "kind": "system",
                "credits_posted": 0,
                "debits_posted": 0,
                "debits_pending": 0,
                "updated_at": datetime.now(UTC),
            }
        ],
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM credit_transfers WHERE 'system:expired' IN (debit_account, credit_account)"
    )
    op.execute("DELETE FROM credit_accounts WHERE id = 'system:expired'")
    op.drop_column("credit_accounts", "period_grant")
    op.drop_column("credit_accounts", "period")
    op.drop_index("ix_jobs_submitted", table_name="jobs")
    for column in ("account_credits_at", "account_credits"):
        op.drop_column("upstream_capacity", column)
    op.drop_column("outbound_events", "data")
