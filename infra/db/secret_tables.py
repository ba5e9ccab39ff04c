"""Secrets at rest: one row per sealed secret (ciphertext, nonce, wrapped data key)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)

from infra.db.tables import metadata

PURPOSES = ("node_admin_key", "ssh_ca_key")

secrets = Table(
    "secrets",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("uuid", Uuid, nullable=False),  # bound into both ciphertexts' associated data
    Column("purpose", Text, nullable=False),
    Column("key_version", Text, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("rewrapped_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(f"purpose IN ({', '.join(repr(p) for p in PURPOSES)})", name="purpose_known"),
    CheckConstraint("octet_length(nonce) = 12", name="nonce_96_bits"),
    UniqueConstraint("uuid", name="uq_secrets_uuid"),
)
Index("ix_secrets_key_version", secrets.c.key_version)
