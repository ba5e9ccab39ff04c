"""Secrets at rest: sealed secrets with their wrapped data keys (envelope encryption).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("key_version", sa.Text(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "purpose IN ('node_admin_key', 'ssh_ca_key')", name=op.f("ck_secrets_purpose_known")
        ),
        sa.CheckConstraint("octet_length(nonce) = 12", name=op.f("ck_secrets_nonce_96_bits")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secrets")),
        sa.UniqueConstraint("uuid", name="uq_secrets_uuid"),
    )
    op.create_index("ix_secrets_key_version", "secrets", ["key_version"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_secrets_key_version", table_name="secrets")
    op.drop_table("secrets")
