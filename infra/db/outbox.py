"""Outbox storage: append events in the caller's transaction; claim and mark them for the relay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.events import DomainEvent
from infra.db.tables import outbox


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    topic: str
    name: str
    payload: dict[str, Any]


async def append(conn: AsyncConnection, events: Sequence[DomainEvent]) -> None:
    await conn.execute(
        insert(outbox),
        [{"topic": e.topic, "name": e.name, "payload": e.payload} for e in events],
    )


async def claim_unpublished(conn: AsyncConnection, limit: int) -> list[OutboxMessage]:
    """Lock a batch of unpublished rows; SKIP LOCKED lets several relays share the work."""
    stmt = (
        select(outbox.c.id, outbox.c.topic, outbox.c.name, outbox.c.payload)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [OutboxMessage(r.id, r.topic, r.name, r.payload) for r in await conn.execute(stmt)]


async def mark_published(conn: AsyncConnection, ids: Sequence[int]) -> None:
    await conn.execute(
        update(outbox).where(outbox.c.id.in_(list(ids))).values(published_at=func.now())
    )


async def count_unpublished(conn: AsyncConnection) -> int:
    stmt = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
    return int((await conn.execute(stmt)).scalar_one())
