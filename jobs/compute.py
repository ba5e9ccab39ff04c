"""The allocation engine's loop in the worker: find allocations whose next step is due and hand
each to the `advance_allocation` actor. Claiming pushes the next attempt a lease ahead (SKIP
LOCKED), so two workers never take one allocation, and a worker killed mid-step only delays it
by the lease: it comes due again and another worker finishes it (every step is an "ensure")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import structlog

from domain.compute.kit import ComputeKit
from domain.compute.metering import meter
from domain.compute.reconcile import reconcile_node
from domain.fleet.records import NodeFilter
from domain.pagination import PageRequest
from domain.ports import UnitOfWork

log = structlog.get_logger(__name__)

CLAIM_BATCH = 100


class EngineTicker:
    def __init__(self, uow: Callable[[], UnitOfWork], send: Callable[[int], object],
                 lease: timedelta, tick_seconds: float) -> None:  # fmt: skip
        self._uow = uow
        self._send = send
        self._lease = lease
        self._tick = tick_seconds

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # one bad tick must not end the loop
                log.exception("engine.tick_failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._tick)

    async def tick(self) -> int:
        now = datetime.now(UTC)
        uow = self._uow()
        async with uow:
            due = await uow.allocations.claim_due(now, now + self._lease, CLAIM_BATCH)
            await uow.commit()
        for allocation in due:
            self._send(allocation.id)
        if due:
            log.info("engine.steps_sent", allocations=[a.id for a in due])
        return len(due)


class MeteringTicker:
    """Every tick, bill running allocations' time and keep their holds a window ahead
    (domain/compute/metering.py). Each allocation is its own transaction, locked, so several
    workers may run this at once without billing anything twice."""

    def __init__(self, kit: ComputeKit, tick_seconds: float) -> None:
        self._kit = kit
        self._tick = tick_seconds

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._tick)
            if stop.is_set():
                return
            try:
                totals = await meter(self._kit)
            except Exception:  # one bad tick must not end the loop
                log.exception("metering.tick_failed")
                continue
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
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._tick)
            if stop.is_set():
                return
            try:
                await self.tick()
            except Exception:  # one bad tick must not end the loop
                log.exception("reconcile.tick_failed")

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
