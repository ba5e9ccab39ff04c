"""What an operator does to anyone's allocations: read and list them, stop one with a reason
its owner is told, and stop many at once (a drained node's, a suspended user's).

Every stop goes the way a user's does: its running time billed to the second, the rest of the
hold released, the state moved to STOPPING (the engine then removes the Linux account, which
ends the user's SSH sessions, and frees the GPUs). An allocation already stopping or ended is
left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from domain.audit.records import WORKER, RequestMeta
from domain.compute.allocations import (
    Allocation,
    AllocationErrorCode,
    AllocationState,
    AllocationTrigger,
    StopReason,
    allocation_not_found,
    transition,
)
from domain.compute.changes import store
from domain.compute.kit import ComputeKit
from domain.compute.records import AllocationFilter
from domain.compute.settlement import settle
from domain.errors import InvalidInput, Problem
from domain.identity.principal import SYSTEM, Principal
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork
from domain.retry import retrying

MAX_REASON = 500
LIVE = (AllocationState.PLACED, AllocationState.PROVISIONING, AllocationState.RUNNING)


def admin_reason(text: str) -> str:
    """The reason an admin gives for stopping someone's work: required, one short paragraph."""
    clean = text.strip()
    if not clean or len(clean) > MAX_REASON:
        raise InvalidInput(
            Problem(
                AllocationErrorCode.REASON_REQUIRED,
                f"Give a reason (1 to {MAX_REASON} characters); the owner is shown it.",
                "reason",
            )
        )
    return clean


async def stop_in(
    uow: UnitOfWork,
    kit: ComputeKit,
    before: Allocation,
    reason: StopReason,
    now: datetime,
    *,
    action: str,
    actor: Principal = SYSTEM,
    meta: RequestMeta = WORKER,
    detail: dict[str, object] | None = None,
) -> Allocation:
    """In the caller's transaction, with `before` locked: bill and stop it for `reason`."""
    await settle(uow, kit, before, now)
    after = replace(transition(before, AllocationTrigger.STOP, now), stop_reason=reason)
    return await store(uow, before, after, action, actor=actor, meta=meta, now=now, detail=detail)


async def stop_many(
    kit: ComputeKit,
    allocation_ids: Iterable[int],
    reason: StopReason,
    *,
    action: str,
    actor: Principal = SYSTEM,
    meta: RequestMeta = WORKER,
    notice: tuple[NoticeType, Mapping[str, Any]] | None = None,
) -> list[int]:
    """Stop each allocation still live, one transaction each; returns the ids stopped. `notice`
    (type, payload) is also sent to each owner, with the allocation's id added."""
    stopped: list[int] = []
    for allocation_id in allocation_ids:

        async def attempt(allocation_id: int = allocation_id) -> bool:
            uow = kit.uow()
            async with uow:
                before = await uow.allocations.get(allocation_id, for_update=True)
                if before is None or before.state not in LIVE:
                    return False
                saved = await stop_in(
                    uow, kit, before, reason, kit.clock(), action=action, actor=actor, meta=meta
                )
                if notice is not None:
                    await notify(
                        uow, [saved.user_id], notice[0], {**notice[1], "allocationId": saved.id}
                    )
                await uow.commit()
                return True

        if await retrying(attempt):
            stopped.append(allocation_id)
    return stopped


async def admin_stop_allocation(
    kit: ComputeKit, admin: Principal, allocation_id: int, reason: str, meta: RequestMeta
) -> Allocation:
    """An administrator stops anyone's allocation (StopReason.ADMIN). The reason is audited with
    the admin as actor, and its owner is notified with it. One already stopping or ended is
    returned as it is, and nobody is notified again."""
    text = admin_reason(reason)

    async def attempt() -> Allocation:
        uow = kit.uow()
        async with uow:
            before = await uow.allocations.get(allocation_id, for_update=True)
            if before is None:
                raise allocation_not_found(allocation_id)
            if before.state not in LIVE:
                return before
            saved = await stop_in(
                uow,
                kit,
                before,
                StopReason.ADMIN,
                kit.clock(),
                action="admin.allocation.stopped",
                actor=admin,
                meta=meta,
                detail={"reason": text},
            )
            await notify(
                uow,
                [saved.user_id],
                NoticeType.ALLOCATION_STOPPED_BY_ADMIN,
                {"allocationId": saved.id, "reason": text},
            )
            await uow.commit()
            return saved

    return await retrying(attempt)


async def search_allocations(
    uow: UnitOfWork, allocation_filter: AllocationFilter, page: PageRequest
) -> Page[Allocation]:
    """Every user's allocations (admins), newest first."""
    async with uow:
        return await uow.allocations.search(allocation_filter, page)


async def stop_user_work(
    kit: ComputeKit, user_id: int, actor: Principal, meta: RequestMeta
) -> list[int]:
    """A suspended user's live allocations, stopped (reason SUSPENDED); the engine then removes
    their Linux accounts, which ends their SSH sessions. The worker's sweep
    (domain/compute/draining.py) stops any this missed."""
    uow = kit.uow()
    async with uow:
        live = await uow.allocations.live_ids(user_id=user_id)
    return await stop_many(
        kit, live, StopReason.SUSPENDED, action="allocation.owner_suspended", actor=actor, meta=meta
    )
