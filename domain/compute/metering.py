"""Billing while running: each metering tick captures the running time since the last one at
the allocation's own price (the one its owner accepted) and keeps the hold covering a window
ahead: one that covers less is topped up to the window and a step more (`reserve_step`), so
most ticks only capture.

A tick goes through the running allocations in chunks, one transaction per chunk, two chunks at
a time: the chunk's rows are locked with SKIP LOCKED, leaving out rows billed since the tick
started (so several workers split a tick, and none bills a row another is billing or has just
billed), then their holds and wallets, and the ledger is written set-based
(domain/ledger/usage.py). Billing is cumulative (the cost of all billed time minus what was
captured) and `billed_until` only moves forward, so each second is billed once however the
ticks and workers fall.

When the balance cannot cover the next window, the owner is warned (an event on their
allocation) and, if it still cannot after the grace period, the allocation is stopped: billed to
the second, the rest of the hold released. The wallet never goes below zero, because only what
the hold reserved is ever captured. Time a node spends unreachable past the fleet's grace is not
billed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

from domain.compute.allocations import AllocationState, AllocationTrigger, StopReason, transition
from domain.compute.changes import ALLOCATIONS_TOPIC, store
from domain.compute.kit import ComputeKit, usage_cost
from domain.compute.records import AllocationEventKind, Metered
from domain.compute.settlement import accrual, accrue, settle
from domain.events import DomainEvent
from domain.fleet.health import billing_paused
from domain.fleet.nodes import Node
from domain.ledger.usage import UsageTick, tick_holds
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.ports import UnitOfWork
from domain.retry import retrying

CHUNK = 1000  # allocations per transaction
LANES = 2  # chunks billed at once: one's statements run while another's arithmetic does
PAGE = 10_000  # running allocation ids read per query at the start of a tick


@dataclass(frozen=True, slots=True)
class MeterTotals:
    metered: int = 0
    captured: int = 0  # minor units
    warned: int = 0
    stopped: int = 0

    def __add__(self, other: MeterTotals) -> MeterTotals:
        return MeterTotals(
            self.metered + other.metered,
            self.captured + other.captured,
            self.warned + other.warned,
            self.stopped + other.stopped,
        )


@dataclass
class _Tick:
    started: datetime  # rows billed since are another worker's this tick: left alone
    nodes: dict[int, Node] = field(default_factory=dict)  # read once per tick


async def meter(kit: ComputeKit, chunk: int = CHUNK, lanes: int = LANES) -> MeterTotals:
    """One tick over every running allocation that no worker has billed since it started."""
    tick = _Tick(kit.clock())
    ids = await _running_ids(kit)
    chunks = deque(ids[i : i + chunk] for i in range(0, len(ids), chunk))

    async def lane() -> MeterTotals:
        totals = MeterTotals()
        while chunks:
            totals += await retrying(partial(_meter_chunk, kit, tick, chunks.popleft()))
        return totals

    async with asyncio.TaskGroup() as group:  # one lane's failure cancels the others
        running = [group.create_task(lane()) for _ in range(lanes)]
    return sum((done.result() for done in running), MeterTotals())


async def _running_ids(kit: ComputeKit) -> list[int]:
    ids: list[int] = []
    while True:
        uow = kit.uow()
        async with uow:
            page = await uow.allocations.running_ids(ids[-1] if ids else 0, PAGE)
        ids += page
        if len(page) < PAGE:
            return ids


async def _meter_chunk(kit: ComputeKit, tick: _Tick, ids: Sequence[int]) -> MeterTotals:
    """Bill those of `ids` no one else is billing, in one transaction."""
    uow = kit.uow()
    async with uow:
        batch = await uow.allocations.lock_unbilled(ids, tick.started)
        if not batch:
            return MeterTotals()
        totals = await _bill(uow, kit, tick, batch, kit.clock())
        await uow.commit()
    return totals


async def _bill(
    uow: UnitOfWork, kit: ComputeKit, tick: _Tick, batch: Sequence[Metered], now: datetime
) -> MeterTotals:
    nodes = tick.nodes
    unread = {m.node_id for m in batch if m.node_id is not None} - nodes.keys()
    if unread:
        nodes.update(await uow.nodes.get_many(sorted(unread)))
    grace = kit.fleet.policy

    def billed(m: Metered) -> tuple[datetime | None, float]:
        if m.node_id is None:
            return m.billed_until, m.billable_seconds
        node = nodes.get(m.node_id)
        paused = node is not None and billing_paused(node.unreachable_since, now, grace)
        return accrual(m.billed_until, m.billable_seconds, now, paused)

    times = [billed(m) for m in batch]
    policy = kit.policy
    window, step = policy.billing_window.total_seconds(), policy.reserve_step.total_seconds()
    keep_until = now + policy.billing_window
    expires = keep_until + policy.hold_slack
    ticks = []
    for m, (_, seconds) in zip(batch, times, strict=True):
        price = m.hourly_price_minor
        due, ahead = usage_cost(price, seconds), usage_cost(price, seconds + window)
        top_up = usage_cost(price, seconds + window + step)
        ticks.append(UsageTick(m.hold_id, due, ahead, top_up, keep_until, expires))
    done = await tick_holds(uow.ledger, kit.ledger, ticks, now)
    saved: list[Metered] = []
    warned: list[Metered] = []
    stopping: list[int] = []
    for m, (until, seconds) in zip(batch, times, strict=True):
        low = m.low_balance_since
        if not done[m.hold_id].covered:
            if low is not None and now - low >= policy.low_balance_grace:
                stopping.append(m.id)
                continue
            if low is None:
                low = now
                warned.append(m)
        else:
            low = None
        saved.append(_next(m, until, seconds, low))
    await uow.allocations.save_billing(saved, now)
    for m in warned:
        await _warn(uow, kit, m, now)
    for allocation_id in stopping:
        await _stop(uow, kit, allocation_id, now)
    captured = sum(t.captured for t in done.values())
    return MeterTotals(len(batch), captured, len(warned), len(stopping))


def _next(m: Metered, until: datetime | None, seconds: float, low: datetime | None) -> Metered:
    """As stored after the tick: billed, and one version on (a tick is a change)."""
    price = m.hourly_price_minor
    return Metered(m.id, m.user_id, m.version + 1, m.node_id, m.hold_id, price, until, seconds, low)


async def _warn(uow: UnitOfWork, kit: ComputeKit, billed: Metered, now: datetime) -> None:
    grace = kit.policy.low_balance_grace
    stops_at = (now + grace).isoformat()
    payload = {"allocationId": billed.id, "userId": billed.user_id, "stopsAt": stops_at}
    uow.record(DomainEvent(ALLOCATIONS_TOPIC, "allocation.low_balance", payload))
    notice = {"allocationId": billed.id, "stopsAt": stops_at}
    await notify(uow, [billed.user_id], NoticeType.ALLOCATION_LOW_BALANCE, notice)
    message = f"the balance cannot reserve the next window; stops after {grace} unless topped up"
    await uow.allocations.add_event(
        billed.id, AllocationEventKind.LOW_BALANCE, AllocationState.RUNNING, message
    )


async def _stop(uow: UnitOfWork, kit: ComputeKit, allocation_id: int, now: datetime) -> None:
    """Past the grace: bill to the second, release the rest of the hold, stop it."""
    before = await uow.allocations.get(allocation_id, for_update=True)  # locked already
    assert before is not None
    billed = await accrue(uow, kit, before, now)
    await settle(uow, kit, billed, now)
    after = transition(billed, AllocationTrigger.STOP, now)
    after = replace(after, stop_reason=StopReason.BALANCE)
    await store(uow, before, after, "allocation.stopped_for_balance", now=now)
