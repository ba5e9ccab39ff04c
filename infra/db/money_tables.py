"""Money tables: the ledger (accounts, balance projection, transfers, holds), idempotency keys,
and the Stripe side (payments, refunds, received events, reconciliation findings)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from infra.db.tables import metadata

# Platform accounts take every flow's other side; their balance is split over this many rows so
# concurrent transfers do not all queue on one row lock. Wallets have one row (shard 0).
PLATFORM_SHARDS = 16

ACCOUNT_KINDS = (
    "wallet",
    "stripe_clearing",
    "compute_revenue",
    "storage_revenue",
    "promotional_credit",
    "refunds_in_flight",
)
CODES = ("top_up", "usage", "refund", "credit", "reversal")
PHASES = ("posted", "pending", "post_pending", "void_pending")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _created() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column(
        "user_id", BigInteger, ForeignKey("users.id", name="fk_ledger_accounts_user"), nullable=True
    ),
    Column("hourly_spend_limit", BigInteger, nullable=True),
    _created(),
    CheckConstraint(_in("kind", ACCOUNT_KINDS), name="kind_known"),
    CheckConstraint("(kind = 'wallet') = (user_id IS NOT NULL)", name="wallet_has_owner"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
    CheckConstraint("hourly_spend_limit >= 0", name="spend_limit_non_negative"),
    UniqueConstraint("id", "currency", name="uq_ledger_accounts_id_currency"),
)
Index(
    "uq_ledger_accounts_key",
    ledger_accounts.c.kind,
    ledger_accounts.c.currency,
    func.coalesce(ledger_accounts.c.user_id, 0),
    unique=True,
)
Index("ix_ledger_accounts_user_id", ledger_accounts.c.user_id)

# The projection: running sums per account (and shard), kept in the transaction of each
# transfer. `gpucloud ledger verify` proves it equals the sums over the transfers.
ledger_balances = Table(
    "ledger_balances",
    metadata,
    Column(
        "account_id",
        BigInteger,
        ForeignKey("ledger_accounts.id", name="fk_ledger_balances_account"),
        primary_key=True,
    ),
    Column("shard", SmallInteger, primary_key=True),
    Column("guarded", Boolean, nullable=False),
    Column("debits_posted", BigInteger, nullable=False, server_default="0"),
    Column("credits_posted", BigInteger, nullable=False, server_default="0"),
    Column("debits_pending", BigInteger, nullable=False, server_default="0"),
    Column("credits_pending", BigInteger, nullable=False, server_default="0"),
    CheckConstraint(
        "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 "
        "AND credits_pending >= 0",
        name="sums_non_negative",
    ),
    # The no-overdraft rule itself: it holds whatever the code above it does.
    CheckConstraint(
        "NOT guarded OR credits_posted - debits_posted - debits_pending >= 0", name="no_overdraft"
    ),
    CheckConstraint("NOT guarded OR shard = 0", name="guarded_single_row"),
)

ledger_holds = Table(
    "ledger_holds",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("wallet_id", BigInteger, nullable=False),
    Column("counterparty_id", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("captured", BigInteger, nullable=False, server_default="0"),
    Column("code", Text, nullable=False),
    Column("reference", Text, nullable=True),
    Column("status", Text, nullable=False, server_default="open"),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    _created(),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("version", Integer, nullable=False, server_default="1"),
    ForeignKeyConstraint(
        ["wallet_id", "currency"],
        ["ledger_accounts.id", "ledger_accounts.currency"],
        name="fk_ledger_holds_wallet",
    ),
    ForeignKeyConstraint(
        ["counterparty_id", "currency"],
        ["ledger_accounts.id", "ledger_accounts.currency"],
        name="fk_ledger_holds_counterparty",
    ),
    CheckConstraint("amount > 0 AND captured >= 0 AND captured <= amount", name="amounts_valid"),
    CheckConstraint("status IN ('open', 'captured', 'voided', 'expired')", name="status_known"),
    CheckConstraint("(status = 'open') = (resolved_at IS NULL)", name="resolved_at_matches"),
    CheckConstraint(_in("code", CODES), name="code_known"),
)
Index(
    "ix_ledger_holds_open_expiry",
    ledger_holds.c.expires_at,
    postgresql_where=text("status = 'open'"),
)
Index("ix_ledger_holds_reference", ledger_holds.c.reference)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("debit_account_id", BigInteger, nullable=False),
    Column("credit_account_id", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("code", Text, nullable=False),
    Column("phase", Text, nullable=False),
    Column(
        "hold_id",
        BigInteger,
        ForeignKey("ledger_holds.id", name="fk_ledger_transfers_hold"),
        nullable=True,
    ),
    Column(
        "reverses_id",
        BigInteger,
        ForeignKey("ledger_transfers.id", name="fk_ledger_transfers_reverses"),
        nullable=True,
    ),
    Column("reference", Text, nullable=True),
    Column("memo", Text, nullable=True),
    _created(),
    # Both postings in the transfer's currency, so every transfer sums to zero per currency.
    ForeignKeyConstraint(
        ["debit_account_id", "currency"],
        ["ledger_accounts.id", "ledger_accounts.currency"],
        name="fk_ledger_transfers_debit",
    ),
    ForeignKeyConstraint(
        ["credit_account_id", "currency"],
        ["ledger_accounts.id", "ledger_accounts.currency"],
        name="fk_ledger_transfers_credit",
    ),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
    CheckConstraint(_in("code", CODES), name="code_known"),
    CheckConstraint(_in("phase", PHASES), name="phase_known"),
    CheckConstraint("(phase = 'posted') = (hold_id IS NULL)", name="hold_matches_phase"),
    CheckConstraint("(code = 'reversal') = (reverses_id IS NOT NULL)", name="reversal_linked"),
)
Index("ix_ledger_transfers_debit", ledger_transfers.c.debit_account_id, ledger_transfers.c.id)
Index("ix_ledger_transfers_credit", ledger_transfers.c.credit_account_id, ledger_transfers.c.id)
Index("ix_ledger_transfers_hold_id", ledger_transfers.c.hold_id)
Index("ix_ledger_transfers_reference", ledger_transfers.c.reference)
Index("uq_ledger_transfers_reverses_id", ledger_transfers.c.reverses_id, unique=True)
Index(
    "ix_ledger_transfers_spend",
    ledger_transfers.c.debit_account_id,
    ledger_transfers.c.created_at,
    postgresql_where=text("code = 'usage'"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("owner_id", BigInteger, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("operation", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("result_type", Text, nullable=False),
    Column("result_id", BigInteger, nullable=False),
    _created(),
)

payments = Table(
    "payments",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("user_id", BigInteger, ForeignKey("users.id", name="fk_payments_user"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("stripe_intent_id", Text, nullable=True),
    Column("stripe_checkout_id", Text, nullable=True),
    Column("checkout_url", Text, nullable=True),
    Column("amount_received", BigInteger, nullable=False, server_default="0"),
    Column("amount_refunded", BigInteger, nullable=False, server_default="0"),
    Column(
        "credit_transfer_id",
        BigInteger,
        ForeignKey("ledger_transfers.id", name="fk_payments_credit_transfer"),
        nullable=True,
    ),
    Column("failure_reason", Text, nullable=True),
    Column("version", Integer, nullable=False, server_default="1"),
    _created(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "amount > 0 AND amount_received >= 0 AND amount_refunded >= 0 "
        "AND amount_refunded <= amount_received",
        name="amounts_valid",
    ),
    CheckConstraint(
        "status IN ('pending', 'requires_payment', 'processing', 'succeeded', "
        "'failed', 'canceled')",
        name="status_known",
    ),
)
Index("uq_payments_stripe_intent_id", payments.c.stripe_intent_id, unique=True)
Index("uq_payments_stripe_checkout_id", payments.c.stripe_checkout_id, unique=True)
Index("ix_payments_user_id_id", payments.c.user_id, payments.c.id)

refunds = Table(
    "refunds",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "payment_id",
        BigInteger,
        ForeignKey("payments.id", name="fk_refunds_payment"),
        nullable=False,
    ),
    Column("user_id", BigInteger, ForeignKey("users.id", name="fk_refunds_user"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("stripe_refund_id", Text, nullable=True),
    Column(
        "hold_id", BigInteger, ForeignKey("ledger_holds.id", name="fk_refunds_hold"), nullable=False
    ),
    Column("failure_reason", Text, nullable=True),
    Column("requested_by", BigInteger, nullable=True),
    Column("version", Integer, nullable=False, server_default="1"),
    _created(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        "status IN ('pending', 'submitted', 'succeeded', 'failed', 'canceled')", name="status_known"
    ),
)
Index("uq_refunds_stripe_refund_id", refunds.c.stripe_refund_id, unique=True)
Index("ix_refunds_payment_id", refunds.c.payment_id)
Index("ix_refunds_user_id_id", refunds.c.user_id, refunds.c.id)
Index(
    "ix_refunds_unsettled",
    refunds.c.updated_at,
    postgresql_where=text("status IN ('pending', 'submitted')"),
)

stripe_events = Table(
    "stripe_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("outcome", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

reconciliation_issues = Table(
    "reconciliation_issues",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("stripe_object_id", Text, nullable=False),
    Column("payment_id", BigInteger, nullable=True),
    Column("refund_id", BigInteger, nullable=True),
    Column("expected", Text, nullable=True),
    Column("actual", Text, nullable=True),
    Column("detail", Text, nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("kind", "stripe_object_id", name="uq_reconciliation_issues_kind_object"),
)
