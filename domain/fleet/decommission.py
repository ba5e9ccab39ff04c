"""Decommissioning a retired node: taking off the machine what bootstrap put there, so that it
trusts nothing of the platform any more, and saying what could not be taken off.

Bootstrap (domain/fleet/checks.py) leaves on a node: the platform CA trust file and the sshd
drop-in naming it, the platform group and one group per GPU, a udev rule, and each GPU device
owned by its group with mode 0660. Decommissioning removes the file, the drop-in (then reloads
sshd), the rule and the groups, and gives each device back to root:root mode 0666, the NVIDIA
driver's own default (NVreg_DeviceFileUID/GID 0, NVreg_DeviceFileMode 0666). Each step is
tried on its own; what fails is reported, never a reason to keep the node from retiring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from domain.fleet.changes import fleet_event
from domain.fleet.kit import FleetKit
from domain.fleet.nodes import Node, NodeState
from domain.fleet.records import NewNodeEvent, NodeEventKind
from domain.fleet.remote import NodeFailure, NodeTarget
from domain.fleet.targets import node_target
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify_admins


@dataclass(frozen=True, slots=True)
class DecommissionPlan:
    platform_group: str
    gpu_indices: Sequence[int]  # every GPU the inventory recorded


class NodeDecommissioner(Protocol):
    """Runs the decommissioning on a node (infra/nodes/decommission.py)."""

    async def decommission(self, target: NodeTarget, plan: DecommissionPlan) -> list[str]:
        """Remove what bootstrap made; returns what could not be removed, one line each (empty:
        all gone). Raises the `NodeFailure` family when it could not run at all."""
        ...


async def decommission(kit: FleetKit, node_id: int, *, contact: bool = True) -> Node | None:
    """Decommission the retired node and record the outcome on it (a DECOMMISSIONED event, the
    node's `decommission_leftovers`); with leftovers, administrators are alerted. A node that
    was quarantined (`contact` False) is not talked to: it may be an impostor."""
    uow = kit.uow()
    async with uow:
        node = await uow.nodes.get(node_id)
        if node is None or node.state is not NodeState.RETIRED:
            return node
        gpus = (await uow.nodes.gpus([node_id])).get(node_id, ())
        plan = DecommissionPlan(kit.platform_group, sorted({g.index for g in gpus}))
        target = (
            await node_target(kit, uow, node, f"decommission:node-{node_id}")
            if contact and kit.decommissioner is not None
            else None
        )
    leftovers = await _run(kit, target, plan, contact=contact)
    uow = kit.uow()
    async with uow:
        before = await uow.nodes.get(node_id, for_update=True)
        if before is None:
            return None
        after = replace(
            before,
            version=before.version + 1,
            updated_at=kit.clock(),
            decommission_leftovers=tuple(leftovers),
        )
        saved = await uow.nodes.save(after)
        message = (
            "decommissioned: platform trust, sshd drop-in, groups, udev rule and device "
            "ownership removed"
            if not leftovers
            else "decommissioned, but could not remove: " + "; ".join(leftovers)
        )
        await uow.nodes.add_event(
            NewNodeEvent(node_id, NodeEventKind.DECOMMISSIONED, message[:1000], state=saved.state)
        )
        uow.record(fleet_event("node.decommissioned", saved, message=message[:1000]))
        if leftovers:
            await notify_admins(
                uow,
                NoticeType.NODE_ALERT,
                {
                    "nodeId": saved.id,
                    "name": saved.name,
                    "state": str(saved.state),
                    "previous": str(saved.state),
                    "reason": None,
                    "message": message[:1000],
                },
            )
        await uow.commit()
        return saved


async def _run(
    kit: FleetKit, target: NodeTarget | None, plan: DecommissionPlan, *, contact: bool
) -> list[str]:
    if not contact:
        return [
            "everything: the node was quarantined (its host key changed), so it was not "
            "contacted; clean it by hand"
        ]
    if target is None or kit.decommissioner is None:
        return ["everything: no node driver is configured to reach the node"]
    try:
        return await kit.decommissioner.decommission(target, plan)
    except NodeFailure as exc:
        return [f"everything: the decommissioning did not run ({str(exc)[:300]})"]
