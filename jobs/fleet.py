"""The fleet loop in the worker: nodes due a bootstrap or a probe are claimed with a lease by
jobs/loop.py's Dispatcher (domain/leases.py) and checked by the `check_node` actor under that
lease."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from domain.leases import Claimed
from domain.ports import UnitOfWork


async def claim_nodes(
    uow: UnitOfWork, now: datetime, lease: timedelta, limit: int
) -> Sequence[Claimed]:
    return await uow.nodes.claim_due(now, lease, limit)
