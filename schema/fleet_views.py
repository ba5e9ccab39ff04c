"""The fleet seen whole: its capacity per node and per model and region, and its live events.
Admins only, like the rest of the fleet (schema/fleet.py)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import strawberry

from domain.fleet.nodes import NodeHealth as DomainNodeHealth
from domain.fleet.nodes import NodeState as DomainNodeState
from domain.fleet.nodes import ReasonCode as DomainReasonCode
from domain.fleet.records import CapacityRow
from schema.fleet import FleetNode, NodeHealth, NodeState, ReasonCode, enum_or_none
from schema.relay import to_global_id

# --- Capacity ---------------------------------------------------------------------------------


async def _capacity_node(root: CapacityEntry, info: strawberry.Info) -> FleetNode:
    found = await info.context.loaders.fleet_node.load(root.node_key)
    if found is None:  # nodes are retired, never deleted
        raise LookupError(f"node {root.node_key} of a capacity row is gone")
    return FleetNode.from_domain(found)


@strawberry.type(description="One node's GPUs: how many it has and where they stand.")
class CapacityEntry:
    node: FleetNode = strawberry.field(resolver=_capacity_node)
    gpu_model: str | None = strawberry.field(description="Null until the node is inventoried.")
    region: str
    total: int = strawberry.field(description="Present GPUs.")
    allocated: int = strawberry.field(description="GPUs assigned to work now.")
    free: int = strawberry.field(description="Unassigned GPUs of a READY node (0 otherwise).")
    cordoned: int = strawberry.field(
        description="Unassigned GPUs of a CORDONED or DRAINING node (0 otherwise)."
    )
    node_key: strawberry.Private[int]

    @classmethod
    def from_domain(cls, row: CapacityRow) -> CapacityEntry:
        return cls(node_key=row.node_id, gpu_model=row.gpu_model or None, region=row.region,
                   total=row.total, allocated=row.allocated, free=row.free,
                   cordoned=row.cordoned)  # fmt: skip


@strawberry.type(description="The GPUs of one model in one region, summed over its nodes.")
class CapacityTotal:
    gpu_model: str
    region: str
    total: int
    allocated: int
    free: int
    cordoned: int


@strawberry.type(description="The fleet's GPUs: per node (not retired), and per model and region.")
class FleetCapacity:
    nodes: list[CapacityEntry] = strawberry.field(description="By region, then node name.")
    totals: list[CapacityTotal] = strawberry.field(
        description="Per GPU model and region, of the nodes that have been inventoried; sorted."
    )

    @classmethod
    def from_domain(cls, rows: list[CapacityRow]) -> FleetCapacity:
        sums: dict[tuple[str, str], list[int]] = {}
        for row in rows:
            if row.gpu_model:
                acc = sums.setdefault((row.gpu_model, row.region), [0, 0, 0, 0])
                for i, value in enumerate((row.total, row.allocated, row.free, row.cordoned)):
                    acc[i] += value
        totals = [CapacityTotal(gpu_model=model, region=region, total=t, allocated=a, free=f,
                                cordoned=c)
                  for (model, region), (t, a, f, c) in sorted(sums.items())]  # fmt: skip
        return cls(nodes=[CapacityEntry.from_domain(row) for row in rows], totals=totals)


# --- Live events ------------------------------------------------------------------------------


@strawberry.enum(description="What a fleet event tells: as `FleetEvent.name`, as an enum value.")
class FleetEventKind(Enum):
    REGISTERED = "node.registered"
    STATE_CHANGED = "node.state_changed"
    HEALTH_CHANGED = "node.health_changed"
    ALERT = "node.alert"
    DECOMMISSIONED = "node.decommissioned"


@strawberry.type(
    description="A change in the fleet, delivered live. `kind` is REGISTERED, "
    "STATE_CHANGED, HEALTH_CHANGED (a held node's health moved; its state did not) or ALERT: a "
    "node became QUARANTINED (its host key changed), UNREACHABLE or UNHEALTHY and needs an "
    "admin's eyes. An alert comes besides its STATE_CHANGED. DECOMMISSIONED: a retired node "
    "was cleaned; `message` says what could not be removed."
)
class FleetEvent:
    kind: FleetEventKind
    name: str = strawberry.field(
        deprecation_reason="Use `kind`, the same as an enum value (node.alert is ALERT)."
    )
    node_id: strawberry.ID
    node_name: str
    state: NodeState  # type: ignore[valid-type]
    previous_state: NodeState | None  # type: ignore[valid-type]
    version: int
    health: NodeHealth | None = strawberry.field(  # type: ignore[valid-type]
        description="Given on node.health_changed."
    )
    reason: ReasonCode | None  # type: ignore[valid-type]
    message: str | None = strawberry.field(description="Given on node.alert.")

    @classmethod
    def from_message(cls, name: str, payload: Mapping[str, Any]) -> FleetEvent:
        return cls(
            kind=FleetEventKind(name),
            name=name,
            node_id=to_global_id("FleetNode", int(payload["nodeId"])),
            node_name=str(payload["nodeName"]),
            state=DomainNodeState(payload["state"]),
            previous_state=enum_or_none(DomainNodeState, payload.get("previous")),
            version=int(payload["version"]),
            health=enum_or_none(DomainNodeHealth, payload.get("health")),
            reason=enum_or_none(DomainReasonCode, payload.get("reason")),
            message=None if payload.get("message") is None else str(payload["message"]),
        )
