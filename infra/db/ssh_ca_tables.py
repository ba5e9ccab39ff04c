"""The SSH CA's keys: public key, status, and the sealed secret holding the private key."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from infra.db.secret_tables import secrets
from infra.db.tables import metadata

STATUSES = ("current", "previous", "retired")

ssh_ca_keys = Table(
    "ssh_ca_keys",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("secret_id", BigInteger, ForeignKey(secrets.c.id), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="status_known"),
    CheckConstraint(
        "(status = 'retired') = (retired_at IS NOT NULL)", name="retired_at_iff_retired"
    ),
    UniqueConstraint("secret_id", name="uq_ssh_ca_keys_secret_id"),
    UniqueConstraint("public_key", name="uq_ssh_ca_keys_public_key"),
)
# At most one key signs: a second "current" row is refused, races included.
Index("uq_ssh_ca_keys_one_current", ssh_ca_keys.c.status, unique=True,
      postgresql_where=text("status = 'current'"))  # fmt: skip
