"""The SSH certificate authority's keys (private halves sealed in `secrets`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ssh_ca_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("secret_id", sa.BigInteger(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('current', 'previous', 'retired')",
            name=op.f("ck_ssh_ca_keys_status_known"),
        ),
        sa.CheckConstraint(
            "(status = 'retired') = (retired_at IS NOT NULL)",
            name=op.f("ck_ssh_ca_keys_retired_at_iff_retired"),
        ),
        sa.ForeignKeyConstraint(["secret_id"], ["secrets.id"]),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssh_ca_keys")),
        sa.UniqueConstraint("secret_id", name="uq_ssh_ca_keys_secret_id"),
        sa.UniqueConstraint("public_key", name="uq_ssh_ca_keys_public_key"),
    )
    op.create_index(
        "uq_ssh_ca_keys_one_current",
        "ssh_ca_keys",
        ["status"],
        unique=True,
        postgresql_where=sa.text("status = 'current'"),
    )


def downgrade() -> None:
    op.drop_index("uq_ssh_ca_keys_one_current", table_name="ssh_ca_keys")
    op.drop_table("ssh_ca_keys")
