"""Storing an allocation's change with what goes with it, in the caller's transaction: the row
(version-checked), an entry in its history, and for a change of state an audit row and an
outbox event for the owner's notifications."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from domain.audit.records import WORKER, RequestMeta, audit
from domain.compute.allocations import Allocation, AllocationState
from domain.compute.records import AllocationEventKind
from domain.events import DomainEvent
from domain.identity.principal import SYSTEM, Principal
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.ports import UnitOfWork

ALLOCATIONS_TOPIC = "allocations"


def view(allocation: Allocation) -> dict[str, object]:
    return {"state": str(allocation.state), "version": allocation.version,
            "nodeId": allocation.node_id, "gpus": list(allocation.gpu_indices),
            "username": allocation.username,
            "failure": None if allocation.failure is None else str(allocation.failure.code),
            "stopReason": allocation.stop_reason}  # fmt: skip


async def store(
    uow: UnitOfWork, before: Allocation | None, after: Allocation, action: str, *,
    actor: Principal = SYSTEM, meta: RequestMeta = WORKER, now: datetime | None = None,
    note: tuple[str, str] | None = None, detail: dict[str, object] | None = None,
) -> Allocation:  # fmt: skip
    """Save `after` (made from `before`; None when it was just added). A change of state goes
    into its history, the audit log and the owner's notifications; `note` (kind, message) adds
    an entry to its history without one (a failed attempt, a warning); `detail` adds facts to the
    audit row (an admin's reason)."""
    saved = await uow.allocations.save(after)
    changed = before is None or before.state is not saved.state
    if changed and saved.state is AllocationState.STOPPING:
        # A stop (or a failure) supersedes whoever works on the allocation, an ensure in
        # flight included: its outcome is void, the node refuses its commands, and the
        # teardown can be claimed at once (domain/leases.py).
        saved = replace(saved, lease_token=await uow.allocations.revoke_lease(saved.id))
    if changed:
        # States by name, as the API's enum values spell them (PLACED -> RUNNING).
        text = f"{'created' if before is None else before.state.name} -> {saved.state.name}"
        if saved.failure is not None and (before is None or before.failure is None):
            text += f": {saved.failure.message}"  # the failure that caused this change
        await uow.allocations.add_event(saved.id, AllocationEventKind.STATE_CHANGED, saved.state,
                                        text if note is None else f"{text}; {note[1]}")  # fmt: skip
    elif note is not None:
        await uow.allocations.add_event(saved.id, note[0], saved.state, note[1])
    if changed:
        await uow.audit.append(
            audit(
                actor,
                meta,
                action,
                ("allocation", saved.id),
                before=None if before is None else view(before),
                after={**view(saved), **(detail or {})},
                now=now,
            )
        )
        await notify(uow, [saved.user_id], NoticeType.ALLOCATION_STATE_CHANGED, {
            "allocationId": saved.id, "state": str(saved.state), "version": saved.version,
            "previous": None if before is None else str(before.state),
            "failure": None if saved.failure is None else str(saved.failure.code),
            "stopReason": saved.stop_reason})  # fmt: skip
        uow.record(DomainEvent(topic=ALLOCATIONS_TOPIC, name="allocation.state_changed",
                               payload={"allocationId": saved.id, "userId": saved.user_id,
                                        "state": str(saved.state), "version": saved.version,
                                        "previous": None if before is None
                                        else str(before.state)}))  # fmt: skip
    return saved
