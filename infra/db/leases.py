"""Leases on the rows of a state machine's table (allocations, nodes; volumes and queued work
next): the SQL behind `domain.leases`. A row carries `lease_token` (its generation: it goes up
on every claim and every revocation, never down) and `lease_expires_at` (NULL: nobody holds
it). Times are the database's clock, so workers' clocks never disagree about an expiry.

The row is due when its due column has passed; it is claimable when it is due and nobody holds
it. A claim does not move the due column: holding the lease is what keeps the row from being
claimed again while its step runs, however long the step takes, as long as the holder renews.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Interval,
    Table,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

# The channel a committed change that makes work due is announced on (migration 0010's
# triggers); the worker's Dispatcher LISTENs to it and ticks at once.
WORK_CHANNEL = "gpucloud_work"


def lease_columns() -> list[Column[Any]]:
    return [
        Column("lease_token", BigInteger, nullable=False, server_default="0"),
        Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    ]


class LeasedRows:
    """Claim, take, renew, release and revoke leases on `_leased` rows, whose work falls due
    at `_due_column`. Mixed into the repository of each leased table."""

    _conn: AsyncConnection
    _leased: Table
    _due_column: str

    def _free(self) -> ColumnElement[bool]:
        t = self._leased
        return or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at <= func.now())

    async def _claim_rows(self, now: datetime, lease: timedelta, limit: int) -> list[Any]:
        t = self._leased
        due_at = t.c[self._due_column]
        due = (
            select(t.c.id, due_at.label("due_at"))
            .where(due_at <= now, self._free())
            .order_by(due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
        )
        stmt = (
            update(t)
            .where(t.c.id == due.c.id)
            .values(lease_token=t.c.lease_token + 1, lease_expires_at=_until(lease))
            .returning(*t.c, due.c.due_at)
        )
        rows = await self._conn.execute(stmt)
        return sorted(rows, key=lambda r: (r.due_at, r.id))

    async def take_lease(self, row_id: int, seconds: float) -> int | None:
        t = self._leased
        stmt = (
            update(t)
            .where(t.c.id == row_id, self._free())
            .values(
                lease_token=t.c.lease_token + 1, lease_expires_at=_until(timedelta(seconds=seconds))
            )
            .returning(t.c.lease_token)
        )
        token = (await self._conn.execute(stmt)).scalar_one_or_none()
        return None if token is None else int(token)

    async def renew_lease(self, row_id: int, token: int, seconds: float) -> bool:
        t = self._leased
        stmt = (
            update(t)
            .where(t.c.id == row_id, t.c.lease_token == token)
            .values(lease_expires_at=_until(timedelta(seconds=seconds)))
            .returning(t.c.id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def release_lease(self, row_id: int, token: int) -> bool:
        t = self._leased
        stmt = (
            update(t)
            .where(t.c.id == row_id, t.c.lease_token == token)
            .values(lease_expires_at=None)
            .returning(t.c.id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def revoke_lease(self, row_id: int) -> int:
        t = self._leased
        stmt = (
            update(t)
            .where(t.c.id == row_id)
            .values(lease_token=t.c.lease_token + 1, lease_expires_at=None)
            .returning(t.c.lease_token)
        )
        return int((await self._conn.execute(stmt)).scalar_one())


def _until(lease: timedelta) -> ColumnElement[datetime]:
    return func.now() + literal(lease, Interval())
