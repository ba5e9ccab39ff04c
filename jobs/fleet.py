"""The fleet loop in the worker: nodes due a bootstrap or a probe go to the `check_node`
actor (jobs/loop.py's Dispatcher claims them with a lease)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from domain.ports import UnitOfWork

CLAIM_BATCH = 100


async def claim_nodes(uow: UnitOfWork, now: datetime, lease_until: datetime) -> Sequence[int]:
    return [node.id for node in await uow.nodes.claim_due(now, lease_until, CLAIM_BATCH)]
