"""The price an allocation was accepted at, stored with it: billing never reads the SKU's price
again, so a SKU price change applies to new allocations only. Existing rows take their SKU's
current price (the only record of what they were accepted at).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("allocations", sa.Column("hourly_price_minor", sa.BigInteger(), nullable=True))
    op.add_column("allocations", sa.Column("currency", sa.Text(), nullable=True))
    op.execute("""
        UPDATE allocations a SET hourly_price_minor = s.hourly_price_minor, currency = s.currency
          FROM skus s WHERE s.id = a.sku_id
    """)
    op.alter_column("allocations", "hourly_price_minor", nullable=False)
    op.alter_column("allocations", "currency", nullable=False)
    op.create_check_constraint(
        op.f("ck_allocations_price_positive"), "allocations", "hourly_price_minor > 0"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_allocations_price_positive"), "allocations", type_="check")
    op.drop_column("allocations", "currency")
    op.drop_column("allocations", "hourly_price_minor")
