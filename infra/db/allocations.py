"""The allocation repository: SQL for allocations, mapping rows to domain entities."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.compute.allocations import (
    Allocation,
    AllocationErrorCode,
    AllocationState,
    Failure,
    FailureCode,
)
from domain.compute.records import AllocationEvent, AllocationFilter, Metered, NewAllocation
from domain.errors import Conflict, Problem
from domain.leases import Claimed
from domain.money import Money
from domain.pagination import Page, PageRequest
from infra.db.allocation_tables import allocation_events, allocations
from infra.db.leases import LeasedRows
from infra.db.paging import keyset_page
from infra.db.tables import users

_LIVE = [
    AllocationState.PLACED.value,
    AllocationState.PROVISIONING.value,
    AllocationState.RUNNING.value,
]


def _to_allocation(row: Any) -> Allocation:
    failure = (None if row.failure_code is None
               else Failure(FailureCode(row.failure_code), row.failure_message))  # fmt: skip
    return Allocation(
        id=row.id, user_id=row.user_id, sku_id=row.sku_id,
        hourly_price=Money(row.hourly_price_minor, row.currency), state=AllocationState(row.state),
        version=row.version, node_id=row.node_id, gpu_indices=tuple(row.gpu_indices),
        username=row.username, hold_id=row.hold_id, ssh_key_ids=tuple(row.ssh_key_ids),
        failure=failure, stop_reason=row.stop_reason, attempts=row.attempts,
        next_attempt_at=row.next_attempt_at, deadline=row.deadline, created_at=row.created_at,
        updated_at=row.updated_at, running_since=row.running_since,
        billed_until=row.billed_until, billable_seconds=row.billable_seconds,
        low_balance_since=row.low_balance_since, ended_at=row.ended_at,
        lease_token=row.lease_token,
    )  # fmt: skip


def _mutable(a: Allocation) -> dict[str, Any]:
    return {
        "state": a.state.value, "version": a.version, "node_id": a.node_id,
        "gpu_indices": list(a.gpu_indices), "username": a.username, "hold_id": a.hold_id,
        "failure_code": None if a.failure is None else a.failure.code.value,
        "failure_message": None if a.failure is None else a.failure.message,
        "stop_reason": a.stop_reason, "attempts": a.attempts,
        "next_attempt_at": a.next_attempt_at, "deadline": a.deadline,
        "updated_at": a.updated_at, "running_since": a.running_since,
        "billed_until": a.billed_until, "billable_seconds": a.billable_seconds,
        "low_balance_since": a.low_balance_since, "ended_at": a.ended_at,
    }  # fmt: skip


# A metering tick's rows: the billing columns only, locked.
_LOCK_UNBILLED = text("""
    SELECT id, user_id, version, node_id, hold_id, hourly_price_minor, billed_until,
           billable_seconds, low_balance_since
      FROM allocations
     WHERE id = ANY(CAST(:ids AS bigint[])) AND state = 'running' AND hold_id IS NOT NULL
       AND (billed_until IS NULL OR billed_until < :before)
     ORDER BY id
       FOR UPDATE SKIP LOCKED
""")

# Many allocations' billing in one statement, each only if still at the version it was read at.
_SAVE_BILLING = text("""
    UPDATE allocations a
       SET version = d.version, updated_at = d.updated_at, billed_until = d.billed_until,
           billable_seconds = d.billable_seconds, low_balance_since = d.low_balance_since
      FROM unnest(CAST(:id AS bigint[]), CAST(:version AS int[]),
                  CAST(:updated_at AS timestamptz[]), CAST(:billed_until AS timestamptz[]),
                  CAST(:billable_seconds AS float8[]), CAST(:low_balance_since AS timestamptz[]))
           AS d(id, version, updated_at, billed_until, billable_seconds, low_balance_since)
     WHERE a.id = d.id AND a.version = d.version - 1
""")


class SqlAllocationRepository(LeasedRows):
    _leased = allocations
    _due_column = "next_attempt_at"

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, new: NewAllocation) -> Allocation:
        stmt = insert(allocations).values(
            user_id=new.user_id, sku_id=new.sku_id, state=AllocationState.REQUESTED.value,
            hourly_price_minor=new.hourly_price.amount_minor, currency=new.hourly_price.currency,
            ssh_key_ids=list(new.ssh_key_ids), public_keys=list(new.public_keys),
        ).returning(allocations)  # fmt: skip
        return _to_allocation((await self._conn.execute(stmt)).one())

    async def get(self, allocation_id: int, *, for_update: bool = False) -> Allocation | None:
        stmt = select(allocations).where(allocations.c.id == allocation_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _to_allocation(row)

    async def get_many(self, allocation_ids: Sequence[int]) -> dict[int, Allocation]:
        if not allocation_ids:
            return {}
        stmt = select(allocations).where(allocations.c.id.in_(list(allocation_ids)))
        return {row.id: _to_allocation(row) for row in await self._conn.execute(stmt)}

    async def of_user(self, user_id: int, allocation_filter: AllocationFilter,
                      page: PageRequest) -> Page[Allocation]:  # fmt: skip
        stmt = select(allocations).where(allocations.c.user_id == user_id)
        if allocation_filter.states:
            stmt = stmt.where(allocations.c.state.in_([s.value for s in allocation_filter.states]))
        return await keyset_page(self._conn, stmt, allocations.c.id, page, _to_allocation,
                                 descending=True)  # fmt: skip

    async def save(self, allocation: Allocation) -> Allocation:
        stmt = (
            update(allocations)
            .where(allocations.c.id == allocation.id,
                   allocations.c.version == allocation.version - 1)
            .values(_mutable(allocation))
            .returning(allocations)
        )  # fmt: skip
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            raise Conflict(Problem(AllocationErrorCode.TRANSITION_NOT_ALLOWED,
                                   f"Allocation {allocation.id} changed meanwhile; reload it.",
                                   "id"))  # fmt: skip
        return _to_allocation(row)

    async def public_keys(self, allocation_ids: Sequence[int]) -> dict[int, list[str]]:
        if not allocation_ids:
            return {}
        stmt = (select(allocations.c.id, allocations.c.public_keys)
                .where(allocations.c.id.in_(allocation_ids)))  # fmt: skip
        return {row.id: list(row.public_keys) for row in await self._conn.execute(stmt)}

    async def add_event(self, allocation_id: int, kind: str, state: AllocationState,
                        message: str) -> None:  # fmt: skip
        await self._conn.execute(insert(allocation_events).values(
            allocation_id=allocation_id, kind=kind, state=state.value, message=message[:1000]))  # fmt: skip

    async def events(self, allocation_ids: Sequence[int],
                     limit: int) -> dict[int, list[AllocationEvent]]:  # fmt: skip
        found: dict[int, list[AllocationEvent]] = {i: [] for i in allocation_ids}
        if not allocation_ids:
            return found
        ranked = select(allocation_events, func.row_number().over(
            partition_by=allocation_events.c.allocation_id,
            order_by=allocation_events.c.id.desc()).label("n"),
        ).where(allocation_events.c.allocation_id.in_(list(allocation_ids))).subquery()  # fmt: skip
        stmt = select(ranked).where(ranked.c.n <= limit).order_by(ranked.c.id.desc())
        for row in await self._conn.execute(stmt):
            found[row.allocation_id].append(AllocationEvent(
                row.id, row.allocation_id, row.kind, AllocationState(row.state), row.message,
                row.at))  # fmt: skip
        return found

    async def on_node(self, node_id: int) -> Sequence[Allocation]:
        stmt = (
            select(allocations)
            .where(allocations.c.node_id == node_id,
                   allocations.c.state.not_in([AllocationState.STOPPED.value,
                                               AllocationState.FAILED.value]))
            .order_by(allocations.c.id)
        )  # fmt: skip
        return [_to_allocation(row) for row in await self._conn.execute(stmt)]

    async def running_ids(self, after_id: int, limit: int) -> list[int]:
        stmt = (
            select(allocations.c.id)
            .where(allocations.c.state == AllocationState.RUNNING.value,
                   allocations.c.id > after_id)
            .order_by(allocations.c.id)
            .limit(limit)
        )  # fmt: skip
        return list((await self._conn.execute(stmt)).scalars())

    async def lock_unbilled(
        self, allocation_ids: Sequence[int], billed_before: datetime
    ) -> Sequence[Metered]:
        params = {"ids": list(allocation_ids), "before": billed_before}
        return [Metered(*row) for row in await self._conn.execute(_LOCK_UNBILLED, params)]

    async def save_billing(self, billed: Sequence[Metered], now: datetime) -> None:
        if not billed:
            return
        columns = {
            "id": [x.id for x in billed],
            "version": [x.version for x in billed],
            "updated_at": [now] * len(billed),
            "billed_until": [x.billed_until for x in billed],
            "billable_seconds": [x.billable_seconds for x in billed],
            "low_balance_since": [x.low_balance_since for x in billed],
        }
        saved = (await self._conn.execute(_SAVE_BILLING, columns)).rowcount
        if saved != len(billed):
            problem = Problem(
                AllocationErrorCode.TRANSITION_NOT_ALLOWED,
                "An allocation changed meanwhile; reload it.",
                "id",
            )
            raise Conflict(problem)

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> Sequence[Claimed]:
        rows = await self._claim_rows(now, lease, limit)
        return [Claimed(row.id, row.lease_token) for row in rows]

    async def search(
        self, allocation_filter: AllocationFilter, page: PageRequest
    ) -> Page[Allocation]:
        stmt = select(allocations)
        if allocation_filter.states:
            stmt = stmt.where(allocations.c.state.in_([s.value for s in allocation_filter.states]))
        if allocation_filter.user_id is not None:
            stmt = stmt.where(allocations.c.user_id == allocation_filter.user_id)
        if allocation_filter.node_id is not None:
            stmt = stmt.where(allocations.c.node_id == allocation_filter.node_id)
        return await keyset_page(
            self._conn, stmt, allocations.c.id, page, _to_allocation, descending=True
        )

    async def live_ids(
        self,
        *,
        user_id: int | None = None,
        node_id: int | None = None,
        suspended_owners: bool = False,
    ) -> list[int]:
        stmt = select(allocations.c.id).where(allocations.c.state.in_(_LIVE))
        if user_id is not None:
            stmt = stmt.where(allocations.c.user_id == user_id)
        if node_id is not None:
            stmt = stmt.where(allocations.c.node_id == node_id)
        if suspended_owners:
            suspended = select(users.c.id).where(users.c.status == "suspended")
            stmt = stmt.where(allocations.c.user_id.in_(suspended))
        return list((await self._conn.execute(stmt.order_by(allocations.c.id))).scalars())

    async def set_keys(
        self, allocation_id: int, key_ids: Sequence[int], public_keys: Sequence[str]
    ) -> None:
        await self._conn.execute(
            update(allocations)
            .where(allocations.c.id == allocation_id)
            .values(ssh_key_ids=list(key_ids), public_keys=list(public_keys))
        )
