"""Users' SSH public keys: what a user's machines let in."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    func,
)

from infra.db.tables import metadata, users

ssh_keys = Table(
    "ssh_keys",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    # A deleted account takes its keys with it: they open nothing without their owner.
    Column(
        "user_id",
        BigInteger,
        ForeignKey(users.c.id, name="fk_ssh_keys_user", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", Text, nullable=False),
    Column("public_key", Text, nullable=False),  # "type base64", no comment, no options
    Column("fingerprint", Text, nullable=False),
    Column("key_type", Text, nullable=False),
    Column("bits", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("char_length(name) BETWEEN 1 AND 64", name="name_length"),
    CheckConstraint("fingerprint LIKE 'SHA256:%'", name="fingerprint_sha256"),
    CheckConstraint("bits > 0", name="bits_positive"),
    # One user, one copy of a key; its leading user_id also serves "this user's keys".
    UniqueConstraint("user_id", "fingerprint", name="uq_ssh_keys_user_id_fingerprint"),
)
Index("uq_ssh_keys_user_id_lower_name", ssh_keys.c.user_id, func.lower(ssh_keys.c.name),
      unique=True)  # fmt: skip
