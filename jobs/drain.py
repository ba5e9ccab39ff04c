"""The worker's drain check (domain/compute/draining.py): every tick, stop work past a drain's
deadline or of a suspended user, mark emptied draining nodes DRAINED (or retire them when a
forced retire asked), and decommission those retired."""

from __future__ import annotations

import asyncio

import structlog

from domain.compute.draining import sweep
from domain.compute.kit import ComputeKit
from jobs.loop import every

log = structlog.get_logger(__name__)


class DrainTicker:
    def __init__(self, kit: ComputeKit, tick_seconds: float) -> None:
        self._kit = kit
        self._tick = tick_seconds

    async def run(self, stop: asyncio.Event) -> None:
        await every(stop, self._tick, self.tick, "drain")

    async def tick(self) -> None:
        swept = await sweep(self._kit)
        if swept.stopped or swept.drained or swept.retired:
            log.info(
                "drain.swept", stopped=swept.stopped, drained=swept.drained, retired=swept.retired
            )
