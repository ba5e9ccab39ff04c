"""The worker's allocation loops: the engine's (allocations whose next step is due are claimed
with a lease by jobs/loop.py's Dispatcher and advanced by the `advance_allocation` actor under
that lease, so a worker killed mid-step only delays it: every step is an "ensure"), metering
and the node reconciler."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog

from domain.compute.kit import ComputeKit
from domain.compute.metering import meter
from domain.compute.reconcile import reconcile_node
from domain.fleet.records import NodeFilter
from domain.leases import Claimed
from domain.pagination import PageRequest
from domain.ports import UnitOfWork
from jobs.loop import every

log = structlog.get_logger(__name__)


async def claim_allocations(
    uow: UnitOfWork, now: datetime, lease: timedelta, limit: int
) -> Sequence[Claimed]:
    """Allocations whose next step is due, for the `advance_allocation` actor."""
    return await uow.allocations.claim_due(now, lease, limit)


class MeteringTicker:
    """Every tick, bill running allocations' time and keep their holds a window ahead
    (domain/compute/metering.py), in chunks of locked rows (SKIP LOCKED), so several workers
    may run this at once, splitting the work, without billing anything twice."""

    def __init__(self, kit: ComputeKit, tick_seconds: float) -> None:
        self._kit = kit
        self._tick = tick_seconds

    async def run(self, stop: asyncio.Event) -> None:
        await every(stop, self._tick, self.tick, "metering", first=False)

    async def tick(self) -> None:
        totals = await meter(self._kit)
        if totals.metered:
            log.info("metering.ticked", allocations=totals.metered, captured=totals.captured,
                     warned=totals.warned, stopped=totals.stopped)  # fmt: skip


class ReconcileTicker:
    """Every tick, compare each node's platform accounts with the database and repair the drift
    (domain/compute/reconcile.py): orphans removed, missing accounts or grants restored."""

    def __init__(self, kit: ComputeKit, tick_seconds: float) -> None:
        self._kit = kit
        self._tick = tick_seconds

    async def run(self, stop: asyncio.Event) -> None:
        await every(stop, self._tick, self.tick, "reconcile", first=False)

    async def tick(self) -> None:
        uow = self._kit.uow()
        async with uow:
            nodes = [n.id for _, n in (await uow.nodes.list(NodeFilter(), PageRequest(
                first=10_000, after_key=None))).items]  # fmt: skip
        for node_id in nodes:
            repairs = await reconcile_node(self._kit, node_id)
            if repairs.orphans_removed or repairs.accounts_restored or repairs.allocations_failed:
                log.warning("reconcile.repaired", node_id=node_id,
                            orphans_removed=repairs.orphans_removed,
                            accounts_restored=repairs.accounts_restored,
                            allocations_failed=repairs.allocations_failed)  # fmt: skip
