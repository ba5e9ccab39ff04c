"""The fleet loop in the worker: find nodes due a bootstrap or a probe and hand each to the
`check_node` actor. Claiming pushes the node's next look a lease ahead (SKIP LOCKED), so two
workers never take the same node, and a worker that dies mid-check only delays it by the lease:
the node comes due again and another worker takes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime

import structlog

from domain.fleet.health import HealthPolicy
from domain.ports import UnitOfWork

log = structlog.get_logger(__name__)

CLAIM_BATCH = 100


class FleetTicker:
    def __init__(self, uow: Callable[[], UnitOfWork], send: Callable[[int], object],
                 policy: HealthPolicy, tick_seconds: float) -> None:  # fmt: skip
        self._uow = uow
        self._send = send
        self._policy = policy
        self._tick = tick_seconds

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # one bad tick must not end the loop
                log.exception("fleet.tick_failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._tick)

    async def tick(self) -> int:
        now = datetime.now(UTC)
        uow = self._uow()
        async with uow:
            due = await uow.nodes.claim_due(now, now + self._policy.lease, CLAIM_BATCH)
            await uow.commit()
        for node in due:
            self._send(node.id)
        if due:
            log.info("fleet.checks_sent", nodes=[n.id for n in due])
        return len(due)
