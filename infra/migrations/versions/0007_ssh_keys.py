"""Users' SSH public keys: one copy and one name (case aside) per user.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("key_type", sa.Text(), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 64", name=op.f("ck_ssh_keys_name_length")
        ),
        sa.CheckConstraint(
            "fingerprint LIKE 'SHA256:%'", name=op.f("ck_ssh_keys_fingerprint_sha256")
        ),
        sa.CheckConstraint("bits > 0", name=op.f("ck_ssh_keys_bits_positive")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_ssh_keys_user", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssh_keys")),
        sa.UniqueConstraint("user_id", "fingerprint", name="uq_ssh_keys_user_id_fingerprint"),
    )
    op.create_index(
        "uq_ssh_keys_user_id_lower_name",
        "ssh_keys",
        ["user_id", sa.literal_column("lower(name)")],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_ssh_keys_user_id_lower_name", table_name="ssh_keys")
    op.drop_table("ssh_keys")
