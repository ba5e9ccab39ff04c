"""Emptying a node: drain with a deadline, retire (with `force`, by draining at once), and the
worker's sweep that finishes both.

- `drain_node`: the node takes no new work (DRAINING); the owners of its allocations are told at
  once when their work will be stopped. The deadline must be in the future.
- `sweep`: allocations still live on a draining node at its deadline are stopped (reason
  DRAINED); a draining node with no GPU assigned becomes DRAINED (an event, and a notice to
  administrators), or RETIRED when a forced retire asked for it. Allocations of suspended
  users still live are stopped too (reason SUSPENDED): the safety net behind `suspendUser`.
- `retire_node`: refused (NODE_BUSY) while a GPU is assigned, unless `force`: then the node
  drains with the deadline now (its allocations stop at once) and retires once empty. A retired
  node is decommissioned (domain/fleet/decommission.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from domain.audit.records import RequestMeta, audit
from domain.compute.allocations import StopReason
from domain.compute.kit import ComputeKit
from domain.compute.operator import stop_many
from domain.errors import Conflict, InvalidInput, Problem
from domain.fleet.changes import store, view
from domain.fleet.decommission import decommission
from domain.fleet.nodes import (
    Node,
    NodeErrorCode,
    NodeState,
    NodeTrigger,
    next_state,
    node_not_found,
    transition,
)
from domain.fleet.records import NodeFilter
from domain.identity.principal import Principal
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.pagination import PageRequest
from domain.ports import UnitOfWork

DEFAULT_GRACE = timedelta(hours=1)  # a drain without a deadline gives running work this long
MAX_GRACE = timedelta(days=30)


def _deadline(given: datetime | None, now: datetime) -> datetime:
    if given is None:
        return now + DEFAULT_GRACE
    if given.tzinfo is None or given <= now or given > now + MAX_GRACE:
        raise InvalidInput(
            Problem(
                NodeErrorCode.INVALID_DEADLINE,
                "The deadline must be a time with a zone, in the future and at most "
                f"{MAX_GRACE.days} days ahead.",
                "deadline",
            )
        )
    return given


async def _locked(uow: UnitOfWork, node_id: int, expected_version: int | None) -> Node:
    node = await uow.nodes.get(node_id, for_update=True)
    if node is None:
        raise node_not_found(node_id)
    if expected_version is not None and node.version != expected_version:
        raise Conflict(
            Problem(
                NodeErrorCode.VERSION_MISMATCH,
                f"Node {node.name} changed (version {node.version}, not {expected_version}); "
                "reload it and try again.",
                "expectedVersion",
            )
        )
    return node


async def _tell_owners(uow: UnitOfWork, node_id: int, deadline: datetime) -> list[int]:
    live = await uow.allocations.live_ids(node_id=node_id)
    found = await uow.allocations.get_many(live)
    for allocation_id in live:
        await notify(
            uow,
            [found[allocation_id].user_id],
            NoticeType.ALLOCATION_NODE_DRAINING,
            {"allocationId": allocation_id, "stopsAt": deadline.isoformat()},
        )
    return live


async def drain_node(
    kit: ComputeKit,
    node_id: int,
    deadline: datetime | None,
    actor: Principal,
    meta: RequestMeta,
    *,
    expected_version: int | None = None,
) -> Node:
    """DRAINING until `deadline` (default: an hour from now); owners are notified now."""
    now = kit.clock()
    when = _deadline(deadline, now)
    uow = kit.uow()
    async with uow:
        before = await _locked(uow, node_id, expected_version)
        after = transition(replace(before, drain_deadline=when), NodeTrigger.DRAIN, now)
        saved = await store(
            uow,
            before,
            after,
            "fleet.node.draining",
            actor=actor,
            meta=meta,
            now=now,
            message=f"draining by an admin; work still running at {when.isoformat()} is stopped",
        )
        await _tell_owners(uow, node_id, when)
        await uow.commit()
        return saved


async def retire_node(
    kit: ComputeKit,
    node_id: int,
    actor: Principal,
    meta: RequestMeta,
    *,
    force: bool = False,
    expected_version: int | None = None,
) -> Node:
    """RETIRED and decommissioned; refused (NODE_BUSY) while a GPU is assigned unless `force`,
    which drains the node with the deadline now and retires it once empty (returned DRAINING)."""
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await _locked(uow, node_id, expected_version)
        next_state(before, NodeTrigger.RETIRE)  # a refused edge is named as such first
        busy = await uow.placements.active_on(node_id)
        if busy and not force:
            raise Conflict(
                Problem(
                    NodeErrorCode.NODE_BUSY,
                    f"Node {before.name} has {busy} GPU(s) assigned; drain it and "
                    "wait, or retire with force to stop its work now.",
                    "id",
                )
            )
        if busy:
            saved = await _force_drain(uow, before, now, actor, meta)
            live = await _tell_owners(uow, node_id, now)
        else:
            after = transition(replace(before, next_probe_at=None), NodeTrigger.RETIRE, now)
            saved = await store(
                uow,
                before,
                after,
                "fleet.node.retired",
                actor=actor,
                meta=meta,
                now=now,
                message="retired by an admin",
            )
        await uow.commit()
    if busy:
        await stop_many(
            kit, live, StopReason.DRAINED, action="allocation.drained", actor=actor, meta=meta
        )
        return saved
    done = await decommission(kit.fleet, node_id, contact=before.state is not NodeState.QUARANTINED)
    return done or saved


async def _force_drain(
    uow: UnitOfWork, before: Node, now: datetime, actor: Principal, meta: RequestMeta
) -> Node:
    if before.state is NodeState.DRAINING:  # already draining: the deadline becomes now
        after = replace(
            before,
            version=before.version + 1,
            updated_at=now,
            drain_deadline=now,
            retire_when_drained=True,
        )
        await uow.audit.append(
            audit(
                actor,
                meta,
                "fleet.node.retire_forced",
                ("node", before.id),
                before=view(before),
                after=view(after),
                now=now,
            )
        )
    else:  # refused (TRANSITION_NOT_ALLOWED) where a drain is: a quarantined node
        after = transition(
            replace(before, drain_deadline=now, retire_when_drained=True), NodeTrigger.DRAIN, now
        )
    return await store(
        uow,
        before,
        after,
        "fleet.node.draining",
        actor=actor,
        meta=meta,
        now=now,
        message="retiring by an admin (force): its work is stopped now",
    )


@dataclass(frozen=True, slots=True)
class Swept:
    stopped: int = 0  # allocations stopped (drain deadline passed, owner suspended)
    drained: int = 0  # nodes that became DRAINED
    retired: int = 0  # nodes retired once empty (a forced retire)


async def sweep(kit: ComputeKit) -> Swept:
    """One pass of the worker's drain check; safe with several workers at once."""
    uow = kit.uow()
    async with uow:
        draining = (
            await uow.nodes.list(
                NodeFilter(state=NodeState.DRAINING), PageRequest(first=10_000, after_key=None)
            )
        ).items
        suspended = await uow.allocations.live_ids(suspended_owners=True)
    stopped = len(
        await stop_many(kit, suspended, StopReason.SUSPENDED, action="allocation.owner_suspended")
    )
    drained = retired = 0
    for _, node in draining:
        now = kit.clock()
        if node.drain_deadline is not None and node.drain_deadline <= now:
            uow = kit.uow()
            async with uow:
                live = await uow.allocations.live_ids(node_id=node.id)
            stopped += len(
                await stop_many(kit, live, StopReason.DRAINED, action="allocation.drained")
            )
        emptied = await _finish(kit, node.id)
        if emptied is not None and emptied.state is NodeState.RETIRED:
            retired += 1
            await decommission(kit.fleet, node.id)
        elif emptied is not None:
            drained += 1
    return Swept(stopped, drained, retired)


async def _finish(kit: ComputeKit, node_id: int) -> Node | None:
    """DRAINED (or RETIRED, when asked) once no GPU of the draining node is assigned."""
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await uow.nodes.get(node_id, for_update=True)
        if before is None or before.state is not NodeState.DRAINING:
            return None
        if await uow.placements.active_on(node_id):
            return None
        if before.retire_when_drained:
            after = transition(replace(before, next_probe_at=None), NodeTrigger.RETIRE, now)
            message = "retired once drained (forced retire)"
        else:
            after = transition(before, NodeTrigger.DRAINED, now)
            message = "drained: no GPU is assigned any more"
        saved = await store(
            uow, before, after, f"fleet.node.{after.state.value}", now=now, message=message
        )
        await uow.commit()
        return saved
