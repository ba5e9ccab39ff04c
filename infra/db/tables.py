"""Table definitions. Alembic migrations are the source of the schema; these mirror them for
queries, and a test checks that the migrated database matches them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

skus = Table(
    "skus",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("gpu_model", Text, nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("ram_gib", Integer, nullable=False),
    Column("disk_gib", Integer, nullable=False),
    Column("region", Text, nullable=False),
    Column("hourly_price_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", Text, nullable=False, server_default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("gpu_count > 0", name="gpu_count_positive"),
    CheckConstraint("vcpus > 0 AND ram_gib > 0 AND disk_gib > 0", name="resources_positive"),
    CheckConstraint("hourly_price_minor > 0", name="price_positive"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
    CheckConstraint("status IN ('active', 'retired')", name="status_known"),
    CheckConstraint("(status = 'retired') = (retired_at IS NOT NULL)", name="retired_at_matches"),
)
Index("uq_skus_lower_name", func.lower(skus.c.name), unique=True)
Index("ix_skus_catalog", skus.c.status, skus.c.gpu_model, skus.c.region, skus.c.id)

# The transactional outbox: rows written in the same transaction as the change they announce.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
)
Index("ix_outbox_unpublished", outbox.c.id, postgresql_where=text("published_at IS NULL"))

OUTBOX_CHANNEL = "gpucloud_outbox"
