"""The audit log: chained, append-only rows written in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.audit.records import GENESIS, AuditEvent, AuditFilter, AuditRecord, chain_hash
from domain.pagination import Page, PageRequest
from infra.db.paging import keyset_page
from infra.db.tables import AUDIT_CHAIN_LOCK, audit_events


def _to_event(row: Any) -> AuditEvent:
    record = AuditRecord(
        action=row.action,
        actor_type=row.actor_type,
        actor_user_id=row.actor_user_id,
        actor_token_id=row.actor_token_id,
        target_type=row.target_type,
        target_id=row.target_id,
        request_id=row.request_id,
        client_ip=row.client_ip,
        before=row.before,
        after=row.after,
        occurred_at=row.occurred_at,
    )
    return AuditEvent(row.id, record, bytes(row.prev_hash), bytes(row.hash))


class SqlAuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(self, record: AuditRecord) -> AuditEvent:
        # The lock is held until this transaction ends, so appends form one chain in commit
        # order and ids increase along it. Audited actions are rare next to reads.
        await self._conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_CHAIN_LOCK}
        )
        last = (
            await self._conn.execute(
                select(audit_events.c.hash).order_by(audit_events.c.id.desc()).limit(1)
            )
        ).scalar()
        prev = GENESIS if last is None else bytes(last)
        digest = chain_hash(prev, record)
        stmt = (
            insert(audit_events)
            .values(
                occurred_at=record.occurred_at,
                actor_type=record.actor_type,
                actor_user_id=record.actor_user_id,
                actor_token_id=record.actor_token_id,
                action=record.action,
                target_type=record.target_type,
                target_id=record.target_id,
                request_id=record.request_id,
                client_ip=record.client_ip,
                before=record.before,
                after=record.after,
                prev_hash=prev,
                hash=digest,
            )
            .returning(audit_events.c.id)
        )
        event_id = (await self._conn.execute(stmt)).scalar_one()
        return AuditEvent(event_id, record, prev, digest)

    async def list(self, audit_filter: AuditFilter, page: PageRequest) -> Page[AuditEvent]:
        stmt = select(audit_events)
        f = audit_filter
        if f.actor_user_id is not None:
            stmt = stmt.where(audit_events.c.actor_user_id == f.actor_user_id)
        if f.action is not None:
            if f.action.endswith("."):
                escaped = f.action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                stmt = stmt.where(audit_events.c.action.like(escaped + "%", escape="\\"))
            else:
                stmt = stmt.where(audit_events.c.action == f.action)
        if f.target_type is not None:
            stmt = stmt.where(audit_events.c.target_type == f.target_type)
        if f.target_id is not None:
            stmt = stmt.where(audit_events.c.target_id == f.target_id)
        if f.since is not None:
            stmt = stmt.where(audit_events.c.occurred_at >= f.since)
        if f.until is not None:
            stmt = stmt.where(audit_events.c.occurred_at < f.until)
        # Newest first: that is what an administrator looks for.
        return await keyset_page(self._conn, stmt, audit_events.c.id, page, _to_event,
                                 descending=True)  # fmt: skip

    async def get_many(self, event_ids: Sequence[int]) -> dict[int, AuditEvent]:
        if not event_ids:
            return {}
        stmt = select(audit_events).where(audit_events.c.id.in_(list(event_ids)))
        return {row.id: _to_event(row) for row in await self._conn.execute(stmt)}

    async def scan(self, after_id: int, limit: int) -> Sequence[AuditEvent]:
        stmt = (
            select(audit_events)
            .where(audit_events.c.id > after_id)
            .order_by(audit_events.c.id)
            .limit(limit)
        )
        return [_to_event(row) for row in await self._conn.execute(stmt)]
