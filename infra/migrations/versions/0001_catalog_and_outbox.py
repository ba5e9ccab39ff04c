"""SKU catalog and transactional outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "skus",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("gpu_model", sa.Text(), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_gib", sa.Integer(), nullable=False),
        sa.Column("disk_gib", sa.Integer(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("hourly_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("gpu_count > 0", name="ck_skus_gpu_count_positive"),
        sa.CheckConstraint(
            "vcpus > 0 AND ram_gib > 0 AND disk_gib > 0", name="ck_skus_resources_positive"
        ),
        sa.CheckConstraint("hourly_price_minor > 0", name="ck_skus_price_positive"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="ck_skus_currency_iso"),
        sa.CheckConstraint("status IN ('active', 'retired')", name="ck_skus_status_known"),
        sa.CheckConstraint(
            "(status = 'retired') = (retired_at IS NOT NULL)", name="ck_skus_retired_at_matches"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_skus"),
    )
    op.create_index("uq_skus_lower_name", "skus", [sa.text("lower(name)")], unique=True)
    op.create_index("ix_skus_catalog", "skus", ["status", "gpu_model", "region", "id"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    # Wake relays as soon as a transaction with outbox rows commits (NOTIFY is transactional);
    # the relay still polls, so a lost notification only costs latency.
    op.execute(
        """
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('gpucloud_outbox', '');
            RETURN NULL;
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_skus_catalog", table_name="skus")
    op.drop_index("uq_skus_lower_name", table_name="skus")
    op.drop_table("skus")
