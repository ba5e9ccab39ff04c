"""Settling an allocation's money when it stops or fails: bill the running time to the second
and release the rest of the hold. Safe to call twice: a resolved hold is left alone."""

from __future__ import annotations

from datetime import datetime

from domain.compute.allocations import Allocation
from domain.compute.kit import ComputeKit, usage_cost
from domain.ledger import book
from domain.ledger.holds import HoldStatus
from domain.ports import UnitOfWork


async def settle(uow: UnitOfWork, kit: ComputeKit, allocation: Allocation, now: datetime) -> None:
    """In the caller's transaction. Never bills more than the hold reserved, so the wallet
    never goes below zero; metering keeps the hold ahead of the running time."""
    if allocation.hold_id is None:
        return
    hold = (await uow.ledger.holds([allocation.hold_id], for_update=True))[allocation.hold_id]
    if hold.status is not HoldStatus.OPEN:
        return
    if allocation.running_since is None:
        await book.void(uow.ledger, hold.id, now)
        return
    sku = await uow.skus.get(allocation.sku_id)
    assert sku is not None  # SKUs are retired, never deleted
    due = usage_cost(sku.hourly_price.amount_minor,
                     (now - allocation.running_since).total_seconds())  # fmt: skip
    owed = min(max(due - hold.captured, 0), hold.remaining)
    if owed:
        await book.capture(uow.ledger, hold.id, owed, now, final=True)
    else:
        await book.void(uow.ledger, hold.id, now)
