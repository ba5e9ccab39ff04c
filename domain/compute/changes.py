"""Storing an allocation's change with what goes with it, in the caller's transaction: the row
(version-checked), an audit row and an outbox event for the owner's notifications."""

from __future__ import annotations

from datetime import datetime

from domain.audit.records import RequestMeta, audit
from domain.compute.allocations import Allocation
from domain.events import DomainEvent
from domain.identity.principal import SYSTEM, Principal
from domain.ports import UnitOfWork

ALLOCATIONS_TOPIC = "allocations"
ENGINE = RequestMeta(request_id="worker")


def view(allocation: Allocation) -> dict[str, object]:
    return {"state": str(allocation.state), "version": allocation.version,
            "nodeId": allocation.node_id, "gpus": list(allocation.gpu_indices),
            "username": allocation.username,
            "failure": None if allocation.failure is None else str(allocation.failure.code),
            "stopReason": allocation.stop_reason}  # fmt: skip


async def store(
    uow: UnitOfWork, before: Allocation | None, after: Allocation, action: str, *,
    actor: Principal = SYSTEM, meta: RequestMeta = ENGINE, now: datetime | None = None,
) -> Allocation:  # fmt: skip
    """Save `after` (made from `before`; None when it was just added) and, when its state
    changed, audit it and tell the owner."""
    saved = await uow.allocations.save(after)
    if before is None or before.state is not saved.state:
        await uow.audit.append(audit(actor, meta, action, ("allocation", saved.id),
                                     before=None if before is None else view(before),
                                     after=view(saved), now=now))  # fmt: skip
        uow.record(DomainEvent(topic=ALLOCATIONS_TOPIC, name="allocation.state_changed",
                               payload={"allocationId": saved.id, "userId": saved.user_id,
                                        "state": str(saved.state), "version": saved.version,
                                        "previous": None if before is None
                                        else str(before.state)}))  # fmt: skip
    return saved
