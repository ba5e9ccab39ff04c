"""The fleet loop in the worker: nodes due a bootstrap or a probe go to the `check_node`
actor (jobs/loop.py's Dispatcher claims them with a lease, domain/leases.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from domain.leases import Claimed
from domain.ports import UnitOfWork

CLAIM_BATCH = 100


async def claim_nodes(uow: UnitOfWork, now: datetime, lease: timedelta) -> Sequence[Claimed]:
    return await uow.nodes.claim_due(now, lease, CLAIM_BATCH)
