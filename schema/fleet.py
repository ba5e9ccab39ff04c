"""Fleet types: GPU nodes as administrators see them (their GPUs, facts and event history), and
the area's inputs, payloads and error. The fleet's capacity and live events are in
schema/fleet_views.py.

Every type here is reached only through admin fields (`fleetNodes`, `fleetNode`, `capacity`,
the node mutations, `fleetEvents`, and `node(id)`, which asks `admin:read` for a FleetNode).
No type carries a node's credential: neither the private key nor the id of the sealed secret
that holds it.

The GraphQL type is `FleetNode`, not `Node`: `Node` is the Relay interface every object with a
global ID implements (FleetNode among them).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import strawberry

from domain.errors import DomainError
from domain.fleet.inventory import NodeGpu as DomainNodeGpu
from domain.fleet.nodes import Node as DomainNode
from domain.fleet.nodes import NodeAuth as DomainNodeAuth
from domain.fleet.nodes import NodeErrorCode as DomainNodeErrorCode
from domain.fleet.nodes import NodeFacts as DomainNodeFacts
from domain.fleet.nodes import NodeHealth as DomainNodeHealth
from domain.fleet.nodes import NodeState as DomainNodeState
from domain.fleet.nodes import ReasonCode as DomainReasonCode
from domain.fleet.records import BootstrapStep as DomainBootstrapStep
from domain.fleet.records import NodeEvent as DomainNodeEvent
from domain.fleet.records import NodeEventKind as DomainNodeEventKind
from domain.pagination import PageRequest
from schema.errors import Error
from schema.relay import After, Before, Connection, First, Last, Node, to_global_id

E = TypeVar("E", bound=StrEnum)

# The domain's enums themselves, exposed as-is: one list of values, no copy to drift.
NodeState = strawberry.enum(
    DomainNodeState,
    description="What the platform may do with a node; only READY nodes take new work.",
)
NodeHealth = strawberry.enum(
    DomainNodeHealth, description="What the last look at the node found (kept apart from state)."
)
NodeAuth = strawberry.enum(
    DomainNodeAuth,
    description="How the platform logs in: KEY, a private key given at registration (stored "
    "sealed); CA, short-lived certificates from the platform SSH CA the node trusts.",
)
ReasonCode = strawberry.enum(
    DomainReasonCode, description="Why a node is not ready, or why its health is not OK."
)
NodeErrorCode = strawberry.enum(DomainNodeErrorCode, description="Why a fleet request was refused.")
NodeEventKind = strawberry.enum(DomainNodeEventKind, description="What a node event records.")
BootstrapStep = strawberry.enum(DomainBootstrapStep, description="A step of bootstrapping a node.")


def enum_or_none(kind: type[E], value: Any) -> E | None:
    try:
        return None if value is None else kind(value)
    except ValueError:
        return None


@strawberry.type(description="A label on a node: a key and its value.")
class Label:
    key: str
    value: str


@strawberry.type(description="Why a node is not ready (or not healthy), for admins and alerts.")
class NodeReason:
    code: ReasonCode  # type: ignore[valid-type]
    message: str


@strawberry.type(description="A GPU of a node, as its inventory recorded it.")
class NodeGpu:
    index: int
    uuid: str
    model: str = strawberry.field(description="As the driver names it, e.g. NVIDIA H200.")
    memory_mib: int
    driver_version: str
    mig_enabled: bool
    pci_bus_id: str
    present: bool = strawberry.field(
        description="False once a probe no longer finds the GPU; the record stays."
    )

    @classmethod
    def from_domain(cls, gpu: DomainNodeGpu) -> NodeGpu:
        return cls(index=gpu.index, uuid=gpu.uuid, model=gpu.model, memory_mib=gpu.memory_mib,
                   driver_version=gpu.driver_version, mig_enabled=gpu.mig_enabled,
                   pci_bus_id=gpu.pci_bus_id, present=gpu.present)  # fmt: skip


@strawberry.type(description="What bootstrap learnt about the machine besides its GPUs.")
class NodeFacts:
    os_id: str = strawberry.field(description="/etc/os-release ID, e.g. ubuntu.")
    os_version: str = strawberry.field(description="/etc/os-release VERSION_ID, e.g. 22.04.")
    kernel: str
    cpus: int
    ram_mib: int
    disk_total_mib: int
    disk_free_mib: int

    @classmethod
    def from_domain(cls, facts: DomainNodeFacts) -> NodeFacts:
        return cls(os_id=facts.os_id, os_version=facts.os_version, kernel=facts.kernel,
                   cpus=facts.cpus, ram_mib=facts.ram_mib, disk_total_mib=facts.disk_total_mib,
                   disk_free_mib=facts.disk_free_mib)  # fmt: skip


@strawberry.type(description="One entry of a node's history: a step, a change of state or health.")
class NodeEvent(Node):
    kind: NodeEventKind  # type: ignore[valid-type]
    message: str
    step: BootstrapStep | None  # type: ignore[valid-type]
    state: NodeState | None = strawberry.field(  # type: ignore[valid-type]
        description="The node's state after the event."
    )
    reason_code: ReasonCode | None  # type: ignore[valid-type]
    at: datetime

    @classmethod
    def from_domain(cls, event: DomainNodeEvent) -> NodeEvent:
        return cls(
            id=to_global_id("NodeEvent", event.id),
            kind=event.kind,
            message=event.message,
            step=event.step,
            state=event.state,
            reason_code=enum_or_none(DomainReasonCode, event.reason_code),
            at=event.at,
        )


NodeEventConnection = Connection[NodeEvent]


# The fields of FleetNode that read more than the node row, through the request's loaders
# (resolvers.loaders), so a page of nodes costs one query per field, not one per node.


async def _gpus(root: FleetNode, info: strawberry.Info) -> list[NodeGpu]:
    found = await info.context.loaders.node_gpus.load(root.key)
    return [NodeGpu.from_domain(gpu) for gpu in found or ()]


async def _events(
    root: FleetNode,
    info: strawberry.Info,
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
) -> NodeEventConnection:
    key = (root.key, PageRequest.parse(first, after, last, before))
    page = await info.context.loaders.node_events.load(key)
    return NodeEventConnection.from_page(page, NodeEvent.from_domain)


def _fingerprint(root: FleetNode, info: strawberry.Info) -> str | None:
    fleet = info.context.fleet
    if root.host_key is None or fleet is None:
        return None
    try:
        found: str = fleet.codec.fingerprint(root.host_key)
    except DomainError:
        return None
    return found


@strawberry.type(description="A GPU server the platform manages over SSH. Admins only.")
class FleetNode(Node):
    name: str
    host: str
    port: int
    ssh_user: str
    auth: NodeAuth  # type: ignore[valid-type]
    host_key: str | None = strawberry.field(
        description="The pinned host key ('type base64'); null until first contact when none "
        "was given at registration."
    )
    host_key_fingerprint: str | None = strawberry.field(
        resolver=_fingerprint,
        description="SHA256 fingerprint of the pinned host key, as ssh-keygen -l prints it "
        "(null without a host key, or while the fleet is not configured).",
    )
    region: str
    labels: list[Label] = strawberry.field(description="Sorted by key.")
    state: NodeState  # type: ignore[valid-type]
    version: int = strawberry.field(
        description="Goes up on every change of state; pass it as expectedVersion to refuse a "
        "change if the node moved since you looked."
    )
    health: NodeHealth  # type: ignore[valid-type]
    reason: NodeReason | None
    gpu_model: str | None = strawberry.field(
        description="Canonical model, e.g. H200; null until inventoried."
    )
    gpu_count: int
    gpus: list[NodeGpu] = strawberry.field(
        resolver=_gpus, description="Every GPU the inventory recorded, by index, present or not."
    )
    facts: NodeFacts | None
    bootstrapped_at: datetime | None
    last_probe_at: datetime | None
    unreachable_since: datetime | None
    created_at: datetime
    updated_at: datetime
    retired_at: datetime | None
    drain_deadline: datetime | None = strawberry.field(
        description="While DRAINING: when work still running is stopped (reason DRAINED)."
    )
    retire_when_drained: bool = strawberry.field(
        description="A forced retire is waiting for the node to be empty."
    )
    decommission_leftovers: list[str] | None = strawberry.field(
        description="After retiring: what could not be removed from the machine (empty: "
        "everything was); null until decommissioning ran."
    )
    events: NodeEventConnection = strawberry.field(
        resolver=_events, description="The node's history, newest first."
    )
    key: strawberry.Private[int]  # the database id, for the loaders; not exposed

    @classmethod
    def from_domain(cls, node: DomainNode) -> FleetNode:
        return cls(
            id=to_global_id("FleetNode", node.id),
            key=node.id,
            name=node.name,
            host=node.host,
            port=node.port,
            ssh_user=node.ssh_user,
            auth=node.auth,
            host_key=node.host_key,
            region=node.region,
            labels=_labels(node.labels),
            state=node.state,
            version=node.version,
            health=node.health,
            reason=None if node.reason is None
            else NodeReason(code=node.reason.code, message=node.reason.message),
            gpu_model=node.gpu_model,
            gpu_count=node.gpu_count,
            facts=None if node.facts is None else NodeFacts.from_domain(node.facts),
            bootstrapped_at=node.bootstrapped_at,
            last_probe_at=node.last_probe_at,
            unreachable_since=node.unreachable_since,
            created_at=node.created_at,
            updated_at=node.updated_at,
            retired_at=node.retired_at,
            drain_deadline=node.drain_deadline,
            retire_when_drained=node.retire_when_drained,
            decommission_leftovers=None if node.decommission_leftovers is None
            else list(node.decommission_leftovers),
        )  # fmt: skip


def _labels(labels: Mapping[str, str]) -> list[Label]:
    return [Label(key=key, value=value) for key, value in sorted(labels.items())]


FleetNodeConnection = Connection[FleetNode]


@strawberry.input(description="Narrow the node list; every given field must match.")
class FleetNodeFilter:
    state: NodeState | None = None  # type: ignore[valid-type]
    region: str | None = None


# --- Mutations --------------------------------------------------------------------------------


@strawberry.input(description="A label to set on a node.")
class LabelInput:
    key: str
    value: str


@strawberry.input(
    description="A node to register. Every value is checked and all problems reported at once; "
    "nothing is stored or contacted before. The worker then bootstraps the node."
)
class RegisterNodeInput:
    name: str = strawberry.field(description="1-63 lowercase letters, digits or '-'; unique.")
    host: str = strawberry.field(description="A DNS name or an IP address.")
    port: int = 22
    ssh_user: str = strawberry.field(description="The Linux user the platform logs in as.")
    private_key: str | None = strawberry.field(
        default=None,
        description="An unencrypted OpenSSH or PEM private key to log in with. It is sealed at "
        "once and never shown again, nor written to any log or audit row. Give this or useCa.",
    )
    use_ca: bool = strawberry.field(
        default=False,
        description="Log in with certificates from the platform SSH CA (the node must trust "
        "it) instead of a private key.",
    )
    host_key: str | None = strawberry.field(
        default=None,
        description="The node's host key ('ssh-ed25519 AAAA...') to pin; without it, the key "
        "met at first contact is pinned.",
    )
    region: str
    labels: list[LabelInput] = strawberry.field(default_factory=list)


@strawberry.type
class NodePayload:
    node: FleetNode


@strawberry.type(description="One problem with a fleet request.")
class NodeProblem:
    code: NodeErrorCode  # type: ignore[valid-type]
    message: str
    field: str | None


@strawberry.type(description="A fleet request was refused; `problems` lists every reason.")
class NodeError(Error):
    code: NodeErrorCode  # type: ignore[valid-type]
    problems: list[NodeProblem]


NodeResult = Annotated[NodePayload | NodeError, strawberry.union("NodeResult")]
