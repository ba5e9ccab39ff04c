"""Accounting for an allocation's running time, and settling its money when it stops or fails:
bill the time to the second and release the rest of the hold. Safe to call twice: a resolved
hold is left alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from domain.compute.allocations import Allocation
from domain.compute.kit import ComputeKit, usage_cost
from domain.fleet.health import billing_paused
from domain.ledger import book
from domain.ledger.holds import HoldStatus
from domain.ports import UnitOfWork


def accrual(
    billed_until: datetime | None, billable_seconds: float, now: datetime, paused: bool
) -> tuple[datetime | None, float]:
    """(billed_until, billable_seconds) with the running time accounted up to `now`; `paused`:
    the node has been unreachable past the grace, so that time is free. Never moves
    `billed_until` back, so a worker with an older clock bills nothing twice."""
    if billed_until is None or now <= billed_until:
        return billed_until, billable_seconds
    return now, billable_seconds + (0.0 if paused else (now - billed_until).total_seconds())


async def accrue(uow: UnitOfWork, kit: ComputeKit, allocation: Allocation,
                 now: datetime) -> Allocation:  # fmt: skip
    """The allocation with its running time accounted up to `now` (see `accrual`), reading
    whether its node pauses its billing."""
    if allocation.billed_until is None or allocation.node_id is None:
        return allocation
    node = await uow.nodes.get(allocation.node_id)
    paused = node is not None and billing_paused(node.unreachable_since, now, kit.fleet.policy)
    until, seconds = accrual(allocation.billed_until, allocation.billable_seconds, now, paused)
    return replace(allocation, billed_until=until, billable_seconds=seconds)


async def settle(uow: UnitOfWork, kit: ComputeKit, allocation: Allocation, now: datetime) -> None:
    """In the caller's transaction. Never bills more than the hold reserved, so the wallet
    never goes below zero; metering keeps the hold ahead of the running time."""
    if allocation.hold_id is None:
        return
    hold = (await uow.ledger.holds([allocation.hold_id], for_update=True))[allocation.hold_id]
    if hold.status is not HoldStatus.OPEN:
        return
    if allocation.running_since is None or now >= hold.expires_at:
        # Never ran; or the hold outlived its expiry unbilled (no tick for a window and its
        # slack): past it a hold can only be released, the time since the last capture is free.
        await book.void(uow.ledger, hold.id, now)
        return
    billed = await accrue(uow, kit, allocation, now)
    due = usage_cost(allocation.hourly_price.amount_minor, billed.billable_seconds)
    owed = min(max(due - hold.captured, 0), hold.remaining)
    if owed:
        await book.capture(uow.ledger, hold.id, owed, now, final=True)
    else:
        await book.void(uow.ledger, hold.id, now)
