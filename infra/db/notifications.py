"""The notification repository."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.notifications.notices import Notice, NoticeType, Notification
from domain.pagination import Page, PageRequest
from infra.db.notification_tables import notification_counters, notifications
from infra.db.paging import keyset_page
from infra.db.tables import users

# Bump each recipient's counter (creating it at 1) and write the rows, in one statement. The
# counters are taken in ascending user order, as every notifying transaction does.
_ADD = text("""
    WITH bumped AS (
        INSERT INTO notification_counters (user_id, last_seq)
        SELECT u, 1 FROM unnest(CAST(:user_ids AS bigint[])) AS u ORDER BY u
        ON CONFLICT (user_id) DO UPDATE SET last_seq = notification_counters.last_seq + 1
        RETURNING user_id, last_seq
    )
    INSERT INTO notifications (user_id, seq, type, payload)
    SELECT user_id, last_seq, :type, CAST(:payload AS jsonb) FROM bumped
    RETURNING *
""")

# Many subscribers' reads in one statement: each (user, after) pair gets its own window, so two
# sockets of one user at different cursors each get up to `limit` rows of their own.
_AFTER_MANY = text("""
    SELECT * FROM (
        SELECT n.*, w.after_seq,
               row_number() OVER (PARTITION BY w.user_id, w.after_seq ORDER BY n.seq) AS rank
        FROM unnest(CAST(:user_ids AS bigint[]), CAST(:seqs AS bigint[])) AS w(user_id, after_seq)
        JOIN notifications n ON n.user_id = w.user_id AND n.seq > w.after_seq
    ) ranked
    WHERE rank <= :limit
    ORDER BY user_id, after_seq, seq
""")


def _to_notification(row: Any) -> Notification:
    return Notification(id=row.id, user_id=row.user_id, seq=row.seq, type=NoticeType(row.type),
                        payload=dict(row.payload), created_at=row.created_at,
                        read_at=row.read_at)  # fmt: skip


class SqlNotificationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, notice: Notice) -> list[Notification]:
        rows = await self._conn.execute(_ADD, {
            "user_ids": sorted(set(notice.user_ids)), "type": notice.type.value,
            "payload": json.dumps(dict(notice.payload), sort_keys=True)})  # fmt: skip
        return [_to_notification(row) for row in rows]

    async def admin_ids(self) -> list[int]:
        stmt = (select(users.c.id).where(users.c.role == "admin", users.c.status == "active")
                .order_by(users.c.id))  # fmt: skip
        return list((await self._conn.execute(stmt)).scalars())

    async def after_many(self, wants: Sequence[tuple[int, int]],
                         limit: int) -> dict[tuple[int, int], list[Notification]]:  # fmt: skip
        keys = sorted(set(wants))
        found: dict[tuple[int, int], list[Notification]] = {key: [] for key in keys}
        if not keys:
            return found
        rows = await self._conn.execute(_AFTER_MANY, {
            "user_ids": [u for u, _ in keys], "seqs": [s for _, s in keys], "limit": limit})  # fmt: skip
        for row in rows:
            found[(row.user_id, row.after_seq)].append(_to_notification(row))
        return found

    async def page(self, user_id: int, unread_only: bool,
                   request: PageRequest) -> Page[Notification]:  # fmt: skip
        # A recipient's ids rise with its sequence numbers (both are taken under its counter's
        # lock), so id order is sequence order here.
        stmt = select(notifications).where(notifications.c.user_id == user_id)
        if unread_only:
            stmt = stmt.where(notifications.c.read_at.is_(None))
        return await keyset_page(self._conn, stmt, notifications.c.id, request, _to_notification,
                                 descending=True)  # fmt: skip

    async def mark_read(self, user_id: int, up_to_seq: int) -> int:
        result = await self._conn.execute(
            update(notifications)
            .where(notifications.c.user_id == user_id, notifications.c.seq <= up_to_seq,
                   notifications.c.read_at.is_(None))
            .values(read_at=text("now()"))
        )  # fmt: skip
        return int(result.rowcount)

    async def latest_seq(self, user_id: int) -> int:
        stmt = select(notification_counters.c.last_seq).where(
            notification_counters.c.user_id == user_id
        )
        return int((await self._conn.execute(stmt)).scalar_one_or_none() or 0)
