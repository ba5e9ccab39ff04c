"""Leases that hold: a lease generation and expiry on allocations and nodes, and a wake-up on
commit (NOTIFY gpucloud_work) when a row's work becomes due and nobody holds it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (table, the column its work falls due at)
_LEASED = (("allocations", "next_attempt_at"), ("nodes", "next_probe_at"))


def upgrade() -> None:
    for table, due in _LEASED:
        op.add_column(
            table, sa.Column("lease_token", sa.BigInteger(), server_default="0", nullable=False)
        )
        op.add_column(
            table, sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        # NOTIFY is delivered at commit (and folded with its twins of the same transaction),
        # so a worker is woken exactly when a change that made work due is visible to it.
        # "Due" is judged on the statement's clock, not now() (the transaction's start, which
        # comes before the `now` the application computed inside it), with a little slack for
        # the application's clock running ahead: a wake-up too early only costs a tick.
        op.execute(f"""
            CREATE FUNCTION {table}_work_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('gpucloud_work', '{table}');
                RETURN NULL;
            END
            $$
        """)
        op.execute(f"""
            CREATE TRIGGER {table}_work_notify
            AFTER INSERT OR UPDATE OF {due}, lease_expires_at ON {table}
            FOR EACH ROW
            WHEN (NEW.{due} IS NOT NULL AND NEW.lease_expires_at IS NULL
                  AND NEW.{due} <= clock_timestamp() + interval '2 seconds')
            EXECUTE FUNCTION {table}_work_notify()
        """)


def downgrade() -> None:
    for table, _ in reversed(_LEASED):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_work_notify ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_work_notify()")
        op.drop_column(table, "lease_expires_at")
        op.drop_column(table, "lease_token")
