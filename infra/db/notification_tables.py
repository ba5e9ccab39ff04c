"""Notifications and each recipient's sequence counter (see domain/notifications/notices.py)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from infra.db.tables import metadata, users

# One row per recipient; its lock, held until the notifying transaction ends, is what makes
# sequence numbers become visible in order and without gaps.
notification_counters = Table(
    "notification_counters",
    metadata,
    Column("user_id", BigInteger, ForeignKey(users.c.id), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("user_id", BigInteger, ForeignKey(users.c.id), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("read_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("user_id", "seq", name="uq_notifications_user_id_seq"),
)
Index("ix_notifications_unread", notifications.c.user_id, notifications.c.seq,
      postgresql_where=notifications.c.read_at.is_(None))  # fmt: skip
