"""Allocations: a user's GPUs on a node, its Linux account, its hold, and the engine's queue.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "allocations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("sku_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("node_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "gpu_indices", postgresql.ARRAY(sa.Integer()), server_default="{}", nullable=False
        ),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "ssh_key_ids", postgresql.ARRAY(sa.BigInteger()), server_default="{}", nullable=False
        ),
        sa.Column(
            "public_keys",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("failure_code", sa.Text(), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
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
        sa.Column("running_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("billed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("billable_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("low_balance_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state <> 'failed' OR failure_code IS NOT NULL",
            name=op.f("ck_allocations_failed_has_reason"),
        ),
        sa.CheckConstraint(
            "state IN ('requested', 'placed', 'provisioning', 'running', 'stopping', 'stopped', 'failed')",
            name=op.f("ck_allocations_state_known"),
        ),
        sa.CheckConstraint(
            "state NOT IN ('stopped', 'failed') OR ended_at IS NOT NULL",
            name=op.f("ck_allocations_ended_at_when_ended"),
        ),
        sa.CheckConstraint(
            "(failure_code IS NULL) = (failure_message IS NULL)",
            name=op.f("ck_allocations_failure_whole"),
        ),
        sa.CheckConstraint(
            "version >= 1 AND attempts >= 0", name=op.f("ck_allocations_counts_valid")
        ),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["ledger_holds.id"],
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["sku_id"],
            ["skus.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allocations")),
        sa.UniqueConstraint("username", name="uq_allocations_username"),
    )
    op.create_index(
        "ix_allocations_next_attempt_at",
        "allocations",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
    )
    op.create_index(
        "ix_allocations_node_id",
        "allocations",
        ["node_id"],
        unique=False,
        postgresql_where=sa.text("state NOT IN ('stopped', 'failed')"),
    )
    op.create_index(
        "ix_allocations_running",
        "allocations",
        ["id"],
        unique=False,
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_index(
        "ix_allocations_user_id_id",
        "allocations",
        ["user_id", sa.literal_column("id DESC")],
        unique=False,
    )

    op.create_table(
        "allocation_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("allocation_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "state IN ('requested', 'placed', 'provisioning', 'running', 'stopping', "
            "'stopped', 'failed')",
            name=op.f("ck_allocation_events_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["allocations.id"],
            name=op.f("fk_allocation_events_allocation_id_allocations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allocation_events")),
    )
    op.create_index(
        "ix_allocation_events_allocation_id_id",
        "allocation_events",
        ["allocation_id", sa.text("id DESC")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_allocation_events_allocation_id_id", table_name="allocation_events")
    op.drop_table("allocation_events")
    op.drop_index("ix_allocations_user_id_id", table_name="allocations")
    op.drop_index(
        "ix_allocations_running",
        table_name="allocations",
        postgresql_where=sa.text("state = 'running'"),
    )
    op.drop_index(
        "ix_allocations_node_id",
        table_name="allocations",
        postgresql_where=sa.text("state NOT IN ('stopped', 'failed')"),
    )
    op.drop_index(
        "ix_allocations_next_attempt_at",
        table_name="allocations",
        postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
    )
    op.drop_table("allocations")
