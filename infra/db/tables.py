"""Table definitions. Alembic migrations are the source of the schema; these mirror them for
queries, and a test checks that the migrated database matches them."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
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

users = Table(
    "users",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("email", Text, nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("role", Text, nullable=False, server_default="user"),
    Column("status", Text, nullable=False, server_default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("role IN ('user', 'admin')", name="role_known"),
    CheckConstraint("status IN ('active', 'suspended')", name="status_known"),
    CheckConstraint("email = lower(email)", name="email_lower"),
)
Index("uq_users_email", users.c.email, unique=True)

# Accounts linked to an OpenID Connect provider's subject.
user_identities = Table(
    "user_identities",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "user_id",
        BigInteger,
        ForeignKey("users.id", name="fk_user_identities_user"),
        nullable=False,
    ),
    Column("issuer", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("issuer", "subject", name="uq_user_identities_issuer_subject"),
)
Index("ix_user_identities_user_id", user_identities.c.user_id)

sessions = Table(
    "sessions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("user_id", BigInteger, ForeignKey("users.id", name="fk_sessions_user"), nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("client_ip", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
)
Index("uq_sessions_secret_hash", sessions.c.secret_hash, unique=True)
Index("ix_sessions_live", sessions.c.user_id, postgresql_where=text("revoked_at IS NULL"))

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "user_id", BigInteger, ForeignKey("users.id", name="fk_api_tokens_user"), nullable=False
    ),
    Column("name", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("prefix", Text, nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("cardinality(scopes) > 0", name="scopes_present"),
)
Index("uq_api_tokens_secret_hash", api_tokens.c.secret_hash, unique=True)
Index("ix_api_tokens_user_id_id", api_tokens.c.user_id, api_tokens.c.id)

# Append-only (a trigger refuses UPDATE, DELETE and TRUNCATE); each row's hash covers the
# previous row's hash and its own content, so any edit breaks the chain at that row.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("actor_type", Text, nullable=False),
    Column("actor_user_id", BigInteger, nullable=True),
    Column("actor_token_id", BigInteger, nullable=True),
    Column("action", Text, nullable=False),
    Column("target_type", Text, nullable=True),
    Column("target_id", Text, nullable=True),
    Column("request_id", Text, nullable=True),
    Column("client_ip", Text, nullable=True),
    Column("before", JSONB, nullable=True),
    Column("after", JSONB, nullable=True),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
)
Index("uq_audit_events_hash", audit_events.c.hash, unique=True)
Index("ix_audit_events_action", audit_events.c.action, audit_events.c.id)
Index("ix_audit_events_actor", audit_events.c.actor_user_id, audit_events.c.id)
Index("ix_audit_events_target", audit_events.c.target_type, audit_events.c.target_id,
      audit_events.c.id)  # fmt: skip
Index("ix_audit_events_occurred_at", audit_events.c.occurred_at)

AUDIT_CHAIN_LOCK = 0x6175_6469_7400  # pg_advisory_xact_lock key ("audit"): one chain, one writer
