"""The fleet loop in the worker: nodes due a bootstrap or a probe are claimed with a lease by
jobs/loop.py's Dispatcher (domain/leases.py) and checked in the worker under that lease."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import structlog

from domain.fleet.checks import check_node
from domain.fleet.kit import FleetKit
from domain.leases import Claimed
from domain.ports import UnitOfWork

log = structlog.get_logger(__name__)

CLAIM_BATCH = 100


async def claim_nodes(
    uow: UnitOfWork, now: datetime, lease: timedelta, limit: int
) -> Sequence[Claimed]:
    return await uow.nodes.claim_due(now, lease, min(limit, CLAIM_BATCH))


def check_claimed(kit: FleetKit) -> Callable[[int, int], Awaitable[None]]:
    """The fleet's work for the Dispatcher: bootstrap or probe a claimed node, under its lease."""

    async def work(node_id: int, token: int) -> None:
        node = await check_node(kit, node_id, token)
        if node is not None:
            log.info(
                "fleet.node_checked",
                node_id=node_id,
                state=str(node.state),
                health=str(node.health),
                version=node.version,
            )

    return work
