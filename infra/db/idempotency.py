"""Client idempotency keys, stored with a hash of the request they first came with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.idempotency import IdempotencyRecord
from infra.db.money_tables import idempotency_keys

_COLUMNS = ("owner_id", "key", "operation", "request_hash", "result_type", "result_id")


def _record(row: Any) -> IdempotencyRecord:
    return IdempotencyRecord(*(getattr(row, c) for c in _COLUMNS))


class SqlIdempotencyStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def recall(self, owner_id: int, key: str) -> IdempotencyRecord | None:
        k = idempotency_keys.c
        row = (
            await self._conn.execute(
                select(idempotency_keys).where(k.owner_id == owner_id, k.key == key)
            )
        ).first()
        return _record(row) if row else None

    async def remember(self, record: IdempotencyRecord) -> IdempotencyRecord:
        # A concurrent first request holds the key's index entry until it commits; this insert
        # waits for it, then finds its row.
        stmt = (
            insert(idempotency_keys)
            .values({c: getattr(record, c) for c in _COLUMNS})
            .on_conflict_do_nothing(index_elements=["owner_id", "key"])
            .returning(*idempotency_keys.c)
        )
        row = (await self._conn.execute(stmt)).first()
        if row is not None:
            return _record(row)
        stored = await self.recall(record.owner_id, record.key)
        assert stored is not None, "an idempotency key vanished"
        return stored
