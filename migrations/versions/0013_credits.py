"""the credits ledger (accounts, transfers, holds settled by the job's last move); pauses

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

- `credit_accounts`: balances (credits and debits posted, debits pending: holds); a user's
  is never overdrawn, by a CHECK constraint; the service's four accounts are made here.
- `credit_transfers`: every movement; a hold is pending until a charge or a release
  settles it; `idempotency_key` is unique.
- `jobs.credit_state`: held, charged or refunded.
- `upstream_capacity.paused_*`: the Seedance account cannot work (out of credits, our key
  refused): dispatch pauses for everyone until a probe is accepted.
- the trigger `settle_job_hold` on `job_events`: a job's last move (to succeeded, failed or
  canceled) posts its pending hold (succeeded) or voids it (any other end), in the move's
  transaction, exactly once (the hold's state guards it), whichever code made the move.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TERMINAL = "('succeeded', 'failed', 'canceled')"
POSTGRES_FUNCTION = """
CREATE FUNCTION settle_job_hold() RETURNS trigger AS $$
DECLARE
  hold credit_transfers%ROWTYPE;
  outcome text := CASE WHEN NEW.to_status = 'succeeded' THEN 'charge' ELSE 'release' END;
  balance bigint;
BEGIN
  UPDATE credit_transfers
     SET state = CASE WHEN outcome = 'charge' THEN 'posted' ELSE 'voided' END
   WHERE job_id = NEW.job_id AND kind = 'hold' AND state = 'pending'
  RETURNING * INTO hold;
  IF NOT FOUND THEN
    RETURN NEW;
  END IF;
  UPDATE credit_accounts
     SET debits_pending = debits_pending - hold.amount,
         debits_posted = debits_posted + CASE WHEN outcome = 'charge' THEN hold.amount ELSE 0 END,
         updated_at = NEW.at
   WHERE id = hold.debit_account
  RETURNING credits_posted - debits_posted - debits_pending INTO balance;
  IF outcome = 'charge' THEN
    UPDATE credit_accounts
       SET credits_posted = credits_posted + hold.amount, updated_at = NEW.at
     WHERE id = hold.credit_account;
  END IF;
  INSERT INTO credit_transfers (id, idempotency_key, kind, debit_account, credit_account,
      amount, state, pending_id, job_id, user_account, balance_after, created_at)
  VALUES (gen_random_uuid(), outcome || ':' || NEW.job_id, outcome, hold.debit_account,
      hold.credit_account, hold.amount, 'posted', hold.id, NEW.job_id, hold.user_account,
      balance, NEW.at);
  UPDATE jobs SET credit_state = CASE WHEN outcome = 'charge' THEN 'charged' ELSE 'refunded' END
   WHERE id = NEW.job_id;
  RETURN NEW;
END
$$ LANGUAGE plpgsql
"""
_HOLD = "FROM credit_transfers WHERE job_id = NEW.job_id AND kind = 'hold' AND state = 'pending'"
_CHARGED = "NEW.to_status = 'succeeded'"
# built from this file's constants only (no input)
SQLITE_TRIGGER = f"""
CREATE TRIGGER settle_job_hold AFTER INSERT ON job_events
WHEN NEW.to_status IN {TERMINAL} AND NEW.from_status IS NOT NEW.to_status
  AND EXISTS (SELECT 1 {_HOLD})
BEGIN
  UPDATE credit_accounts
     SET debits_pending = debits_pending - (SELECT amount {_HOLD}),
         debits_posted = debits_posted
           + CASE WHEN {_CHARGED} THEN (SELECT amount {_HOLD}) ELSE 0 END,
         updated_at = NEW.at
   WHERE id = (SELECT debit_account {_HOLD});
  UPDATE credit_accounts
     SET credits_posted = credits_posted + (SELECT amount {_HOLD}), updated_at = NEW.at
   WHERE {_CHARGED} AND id = (SELECT credit_account {_HOLD});
  INSERT INTO credit_transfers (id, idempotency_key, kind, debit_account, credit_account,
      amount, state, pending_id, job_id, user_account, balance_after, created_at)
  SELECT lower(hex(randomblob(16))),
         CASE WHEN {_CHARGED} THEN 'charge' ELSE 'release' END || ':' || NEW.job_id,
         CASE WHEN {_CHARGED} THEN 'charge' ELSE 'release' END,
         debit_account, credit_account, amount, 'posted', id, NEW.job_id, user_account,
         (SELECT credits_posted - debits_posted - debits_pending FROM credit_accounts
           WHERE credit_accounts.id = debit_account),
         NEW.at
  {_HOLD};
  UPDATE jobs SET credit_state = CASE WHEN {_CHARGED} THEN 'charged' ELSE 'refunded' END
   WHERE id = NEW.job_id;
  UPDATE credit_transfers SET state = CASE WHEN {_CHARGED} THEN 'posted' ELSE 'voided' END
   WHERE job_id = NEW.job_id AND kind = 'hold' AND state = 'pending';
END
"""  # noqa: S608


def _create_trigger() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(
            "CREATE TRIGGER settle_job_hold AFTER INSERT ON job_events FOR EACH ROW "
            f"WHEN (NEW.to_status IN {TERMINAL} AND NEW.from_status IS DISTINCT FROM "
            "NEW.to_status) EXECUTE FUNCTION settle_job_hold()"
        )
    else:
        op.execute(SQLITE_TRIGGER)


def _drop_trigger() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER settle_job_hold ON job_events")
        op.execute("DROP FUNCTION settle_job_hold()")
    else:
        op.execute("DROP TRIGGER settle_job_hold")


def upgrade() -> None:
    op.create_table(
        "credit_accounts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind <> 'user' OR credits_posted - debits_posted - debits_pending >= 0",
            name=op.f("ck_credit_accounts_never_overdrawn"),
        ),
        sa.CheckConstraint(
            "credits_posted >= 0 AND debits_posted >= 0 AND debits_pending >= 0",
            name=op.f("ck_credit_accounts_totals_not_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_accounts")),
        sa.UniqueConstraint("subject", name=op.f("uq_credit_accounts_subject")),
    )
    op.create_table(
        "credit_transfers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=300), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("debit_account", sa.String(length=64), nullable=False),
        sa.Column("credit_account", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("pending_id", sa.Uuid(), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("user_account", sa.String(length=64), nullable=True),
        sa.Column("balance_after", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_transfers_amount_positive")),
        sa.ForeignKeyConstraint(
            ["credit_account"],
            ["credit_accounts.id"],
            name=op.f("fk_credit_transfers_credit_account_credit_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["debit_account"],
            ["credit_accounts.id"],
            name=op.f("fk_credit_transfers_debit_account_credit_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_transfers")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_credit_transfers_idempotency_key")),
    )
    op.create_index(
        "ix_credit_transfers_job_kind_state",
        "credit_transfers",
        ["job_id", "kind", "state"],
        unique=False,
    )
    op.create_index(
        "ix_credit_transfers_user_created",
        "credit_transfers",
        ["user_account", "created_at", "id"],
        unique=False,
    )
    op.add_column("jobs", sa.Column("credit_state", sa.String(length=8), nullable=True))
    _create_trigger()
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
                "id": f"system:{name}",
                "kind": "system",
                "credits_posted": 0,
                "debits_posted": 0,
                "debits_pending": 0,
                "updated_at": datetime.now(UTC),
            }
            for name in ("grants", "topups", "revenue", "adjustments")
        ],
    )
    op.add_column("upstream_capacity", sa.Column("paused_reason", sa.String(32), nullable=True))
    op.add_column(
        "upstream_capacity", sa.Column("paused_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "upstream_capacity",
        sa.Column("resume_probe_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    for column in ("resume_probe_at", "paused_since", "paused_reason"):
        op.drop_column("upstream_capacity", column)
    _drop_trigger()
    op.drop_column("jobs", "credit_state")
    op.drop_index("ix_credit_transfers_user_created", table_name="credit_transfers")
    op.drop_index("ix_credit_transfers_job_kind_state", table_name="credit_transfers")
    op.drop_table("credit_transfers")
    op.drop_table("credit_accounts")
