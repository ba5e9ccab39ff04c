"""The metering tick as it was before issue 16, kept for bench/metering.py only: one
transaction per running allocation, the SKU's price read on every tick. The benchmark measures
it in the same run as the batched tick (domain/compute/metering.py) to print the ratio.

Copied from commit d6e7747 with one change: `meter_each` takes the allocation ids to bill (the
bench times a sample), instead of paging through every running allocation itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from domain.compute.allocations import (
    Allocation,
    AllocationState,
    AllocationTrigger,
    StopReason,
    transition,
)
from domain.compute.changes import ALLOCATIONS_TOPIC, store
from domain.compute.kit import ComputeKit, usage_cost
from domain.compute.records import AllocationEventKind
from domain.compute.settlement import accrue, settle
from domain.errors import Conflict
from domain.events import DomainEvent
from domain.ledger import book
from domain.ledger.holds import Hold, HoldStatus
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.ports import UnitOfWork


@dataclass(frozen=True, slots=True)
class MeterTotals:
    metered: int = 0
    captured: int = 0  # minor units
    warned: int = 0
    stopped: int = 0


async def meter_each(kit: ComputeKit, ids: Sequence[int]) -> MeterTotals:
    """The old tick over `ids`: one transaction per allocation."""
    totals = MeterTotals()
    for allocation_id in ids:
        totals = await _meter_one(kit, allocation_id, totals)
    return totals


async def _meter_one(kit: ComputeKit, allocation_id: int, totals: MeterTotals) -> MeterTotals:
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await uow.allocations.get(allocation_id, for_update=True)
        if before is None or before.state is not AllocationState.RUNNING or before.hold_id is None:
            return totals
        accrued = await accrue(uow, kit, before, now)
        hold = (await uow.ledger.holds([before.hold_id], for_update=True))[before.hold_id]
        price = await _price(uow, accrued)
        captured, hold = await _capture_due(uow, hold, price, accrued, now)
        covered = await _reserve_ahead(uow, kit, hold, price, accrued, now)
        warned = stopped = 0
        if covered:
            after = replace(accrued, low_balance_since=None)
        elif accrued.low_balance_since is None:
            after = replace(accrued, low_balance_since=now)
            stops_at = (now + kit.policy.low_balance_grace).isoformat()
            uow.record(
                DomainEvent(
                    topic=ALLOCATIONS_TOPIC,
                    name="allocation.low_balance",
                    payload={
                        "allocationId": before.id,
                        "userId": before.user_id,
                        "stopsAt": stops_at,
                    },
                )
            )
            await notify(
                uow,
                [before.user_id],
                NoticeType.ALLOCATION_LOW_BALANCE,
                {"allocationId": before.id, "stopsAt": stops_at},
            )
            warned = 1
        elif now - accrued.low_balance_since >= kit.policy.low_balance_grace:
            await settle(uow, kit, accrued, now)
            after = replace(
                transition(accrued, AllocationTrigger.STOP, now), stop_reason=StopReason.BALANCE
            )
            stopped = 1
        else:
            after = accrued
        if after.state is before.state:
            after = replace(after, version=before.version + 1, updated_at=now)
        note = None
        if warned:
            note = (
                AllocationEventKind.LOW_BALANCE,
                "the balance cannot reserve the next window; stops after "
                f"{kit.policy.low_balance_grace} unless topped up",
            )
        await store(uow, before, after, "allocation.stopped_for_balance", now=now, note=note)
        await uow.commit()
    return MeterTotals(
        totals.metered + 1,
        totals.captured + captured,
        totals.warned + warned,
        totals.stopped + stopped,
    )


async def _capture_due(
    uow: UnitOfWork, hold: Hold, price: int, allocation: Allocation, now: datetime
) -> tuple[int, Hold]:
    """Capture the cost of the time billed so far not yet captured (at most what is held);
    returns the amount and the hold after it."""
    if hold.status is not HoldStatus.OPEN:
        return 0, hold
    owed = min(
        max(usage_cost(price, allocation.billable_seconds) - hold.captured, 0), hold.remaining
    )
    if not owed:
        return 0, hold
    return owed, await book.capture(uow.ledger, hold.id, owed, now)


async def _reserve_ahead(
    uow: UnitOfWork, kit: ComputeKit, hold: Hold, price: int, allocation: Allocation, now: datetime
) -> bool:
    """Make the hold cover a window past the time billed; False when the balance (or the spend
    limit) cannot, in which case the hold is still kept alive for what it holds."""
    if hold.status is not HoldStatus.OPEN:
        return False
    window = kit.policy.billing_window
    wanted = usage_cost(price, allocation.billable_seconds + window.total_seconds())
    expires = now + window + kit.policy.hold_slack
    try:
        await book.extend(
            uow.ledger, kit.ledger, hold.id, expires, now, add_amount=max(wanted - hold.amount, 0)
        )
        return True
    except Conflict:  # INSUFFICIENT_FUNDS or SPEND_LIMIT_REACHED
        await book.extend(uow.ledger, kit.ledger, hold.id, expires, now)
        return False


async def _price(uow: UnitOfWork, allocation: Allocation) -> int:
    sku = await uow.skus.get(allocation.sku_id)
    assert sku is not None  # SKUs are retired, never deleted
    return sku.hourly_price.amount_minor
