"""Money: the ledger (accounts, balances, holds, append-only transfers), idempotency keys,
payments, refunds, Stripe events and reconciliation findings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 04:41:11.036314
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("result_type", sa.Text(), nullable=False),
        sa.Column("result_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("owner_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "reconciliation_issues",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("stripe_object_id", sa.Text(), nullable=False),
        sa.Column("payment_id", sa.BigInteger(), nullable=True),
        sa.Column("refund_id", sa.BigInteger(), nullable=True),
        sa.Column("expected", sa.Text(), nullable=True),
        sa.Column("actual", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column(
            "detected_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_issues")),
        sa.UniqueConstraint(
            "kind", "stripe_object_id", name="uq_reconciliation_issues_kind_object"
        ),
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("hourly_spend_limit", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'wallet') = (user_id IS NOT NULL)",
            name=op.f("ck_ledger_accounts_wallet_has_owner"),
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_ledger_accounts_currency_iso")),
        sa.CheckConstraint(
            "kind IN ('wallet', 'stripe_clearing', 'compute_revenue', 'storage_revenue', 'promotional_credit', 'refunds_in_flight')",
            name=op.f("ck_ledger_accounts_kind_known"),
        ),
        sa.CheckConstraint(
            "hourly_spend_limit >= 0", name=op.f("ck_ledger_accounts_spend_limit_non_negative")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_ledger_accounts_user"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("id", "currency", name="uq_ledger_accounts_id_currency"),
    )
    op.create_index("ix_ledger_accounts_user_id", "ledger_accounts", ["user_id"], unique=False)
    op.create_index(
        "uq_ledger_accounts_key",
        "ledger_accounts",
        ["kind", "currency", sa.literal_column("coalesce(user_id, 0)")],
        unique=True,
    )
    op.create_table(
        "ledger_balances",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("guarded", sa.Boolean(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "NOT guarded OR credits_posted - debits_posted - debits_pending >= 0",
            name=op.f("ck_ledger_balances_no_overdraft"),
        ),
        sa.CheckConstraint(
            "NOT guarded OR shard = 0", name=op.f("ck_ledger_balances_guarded_single_row")
        ),
        sa.CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
            name=op.f("ck_ledger_balances_sums_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["ledger_accounts.id"], name="fk_ledger_balances_account"
        ),
        sa.PrimaryKeyConstraint("account_id", "shard", name=op.f("pk_ledger_balances")),
    )
    op.create_table(
        "ledger_holds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("wallet_id", sa.BigInteger(), nullable=False),
        sa.Column("counterparty_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.CheckConstraint(
            "(status = 'open') = (resolved_at IS NULL)",
            name=op.f("ck_ledger_holds_resolved_at_matches"),
        ),
        sa.CheckConstraint(
            "code IN ('top_up', 'usage', 'refund', 'credit', 'reversal')",
            name=op.f("ck_ledger_holds_code_known"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'captured', 'voided', 'expired')",
            name=op.f("ck_ledger_holds_status_known"),
        ),
        sa.CheckConstraint(
            "amount > 0 AND captured >= 0 AND captured <= amount",
            name=op.f("ck_ledger_holds_amounts_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["counterparty_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_holds_counterparty",
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_holds_wallet",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_holds")),
    )
    op.create_index(
        "ix_ledger_holds_open_expiry",
        "ledger_holds",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index("ix_ledger_holds_reference", "ledger_holds", ["reference"], unique=False)
    op.create_table(
        "ledger_transfers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("debit_account_id", sa.BigInteger(), nullable=False),
        sa.Column("credit_account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("reverses_id", sa.BigInteger(), nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(code = 'reversal') = (reverses_id IS NOT NULL)",
            name=op.f("ck_ledger_transfers_reversal_linked"),
        ),
        sa.CheckConstraint(
            "(phase = 'posted') = (hold_id IS NULL)",
            name=op.f("ck_ledger_transfers_hold_matches_phase"),
        ),
        sa.CheckConstraint(
            "code IN ('top_up', 'usage', 'refund', 'credit', 'reversal')",
            name=op.f("ck_ledger_transfers_code_known"),
        ),
        sa.CheckConstraint(
            "phase IN ('posted', 'pending', 'post_pending', 'void_pending')",
            name=op.f("ck_ledger_transfers_phase_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transfers_amount_positive")),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id", name=op.f("ck_ledger_transfers_two_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_transfers_credit",
        ),
        sa.ForeignKeyConstraint(
            ["debit_account_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_transfers_debit",
        ),
        sa.ForeignKeyConstraint(["hold_id"], ["ledger_holds.id"], name="fk_ledger_transfers_hold"),
        sa.ForeignKeyConstraint(
            ["reverses_id"], ["ledger_transfers.id"], name="fk_ledger_transfers_reverses"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transfers")),
    )
    op.create_index(
        "ix_ledger_transfers_credit", "ledger_transfers", ["credit_account_id", "id"], unique=False
    )
    op.create_index(
        "ix_ledger_transfers_debit", "ledger_transfers", ["debit_account_id", "id"], unique=False
    )
    op.create_index("ix_ledger_transfers_hold_id", "ledger_transfers", ["hold_id"], unique=False)
    op.create_index(
        "ix_ledger_transfers_reference", "ledger_transfers", ["reference"], unique=False
    )
    op.create_index(
        "ix_ledger_transfers_spend",
        "ledger_transfers",
        ["debit_account_id", "created_at"],
        unique=False,
        postgresql_where=sa.text("code = 'usage'"),
    )
    op.create_index(
        "uq_ledger_transfers_reverses_id", "ledger_transfers", ["reverses_id"], unique=True
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("stripe_intent_id", sa.Text(), nullable=True),
        sa.Column("stripe_checkout_id", sa.Text(), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("amount_received", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("credit_transfer_id", sa.BigInteger(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'requires_payment', 'processing', 'succeeded', 'failed', 'canceled')",
            name=op.f("ck_payments_status_known"),
        ),
        sa.CheckConstraint(
            "amount > 0 AND amount_received >= 0 AND amount_refunded >= 0 AND amount_refunded <= amount_received",
            name=op.f("ck_payments_amounts_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_transfer_id"], ["ledger_transfers.id"], name="fk_payments_credit_transfer"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_payments_user"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    op.create_index("ix_payments_user_id_id", "payments", ["user_id", "id"], unique=False)
    op.create_index(
        "uq_payments_stripe_checkout_id", "payments", ["stripe_checkout_id"], unique=True
    )
    op.create_index("uq_payments_stripe_intent_id", "payments", ["stripe_intent_id"], unique=True)
    op.create_table(
        "refunds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("payment_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("stripe_refund_id", sa.Text(), nullable=True),
        sa.Column("hold_id", sa.BigInteger(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'submitted', 'succeeded', 'failed', 'canceled')",
            name=op.f("ck_refunds_status_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.ForeignKeyConstraint(["hold_id"], ["ledger_holds.id"], name="fk_refunds_hold"),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"], name="fk_refunds_payment"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_refunds_user"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
    )
    op.create_index("ix_refunds_payment_id", "refunds", ["payment_id"], unique=False)
    op.create_index(
        "ix_refunds_unsettled",
        "refunds",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'submitted')"),
    )
    op.create_index("ix_refunds_user_id_id", "refunds", ["user_id", "id"], unique=False)
    op.create_index("uq_refunds_stripe_refund_id", "refunds", ["stripe_refund_id"], unique=True)
    # Transfers are history: never changed, never removed. A correction is a reversing transfer.
    op.execute(
        """
        CREATE FUNCTION ledger_transfers_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger_transfers is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_transfers_no_change BEFORE UPDATE OR DELETE ON ledger_transfers "
        "FOR EACH ROW EXECUTE FUNCTION ledger_transfers_append_only()"
    )
    op.execute(
        "CREATE TRIGGER ledger_transfers_no_truncate BEFORE TRUNCATE ON ledger_transfers "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_transfers_append_only()"
    )


def downgrade() -> None:
    op.drop_index("uq_refunds_stripe_refund_id", table_name="refunds")
    op.drop_index("ix_refunds_user_id_id", table_name="refunds")
    op.drop_index(
        "ix_refunds_unsettled",
        table_name="refunds",
        postgresql_where=sa.text("status IN ('pending', 'submitted')"),
    )
    op.drop_index("ix_refunds_payment_id", table_name="refunds")
    op.drop_table("refunds")
    op.drop_index("uq_payments_stripe_intent_id", table_name="payments")
    op.drop_index("uq_payments_stripe_checkout_id", table_name="payments")
    op.drop_index("ix_payments_user_id_id", table_name="payments")
    op.drop_table("payments")
    op.drop_index("uq_ledger_transfers_reverses_id", table_name="ledger_transfers")
    op.drop_index(
        "ix_ledger_transfers_spend",
        table_name="ledger_transfers",
        postgresql_where=sa.text("code = 'usage'"),
    )
    op.drop_index("ix_ledger_transfers_reference", table_name="ledger_transfers")
    op.drop_index("ix_ledger_transfers_hold_id", table_name="ledger_transfers")
    op.drop_index("ix_ledger_transfers_debit", table_name="ledger_transfers")
    op.drop_index("ix_ledger_transfers_credit", table_name="ledger_transfers")
    op.drop_table("ledger_transfers")
    op.drop_index("ix_ledger_holds_reference", table_name="ledger_holds")
    op.drop_index(
        "ix_ledger_holds_open_expiry",
        table_name="ledger_holds",
        postgresql_where=sa.text("status = 'open'"),
    )
    op.drop_table("ledger_holds")
    op.drop_table("ledger_balances")
    op.drop_index("uq_ledger_accounts_key", table_name="ledger_accounts")
    op.drop_index("ix_ledger_accounts_user_id", table_name="ledger_accounts")
    op.drop_table("ledger_accounts")
    op.drop_table("stripe_events")
    op.drop_table("reconciliation_issues")
    op.drop_table("idempotency_keys")
    op.execute("DROP FUNCTION ledger_transfers_append_only()")
