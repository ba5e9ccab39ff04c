"""Fleet resolvers (admins only, as resolvers.root declares): the node list, one node, capacity,
registering and the admin actions on a node, and the live `fleetEvents`.

Reads need only the database. Writes need the fleet kit, which exists only when the key service
is configured (a node's private key is sealed with it): without it they answer
SERVICE_UNAVAILABLE, as any other missing backing service does.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import Info

from domain.compute import draining
from domain.compute.kit import ComputeKit
from domain.errors import DomainError, InvalidInput, Problem, ServiceUnavailable
from domain.fleet import node_services
from domain.fleet.changes import FLEET_TOPIC
from domain.fleet.kit import FleetKit
from domain.fleet.nodes import Node as DomainNode
from domain.fleet.nodes import NodeErrorCode, NodeTrigger
from domain.fleet.records import NodeFilter
from domain.fleet.registration import NodeSpec
from domain.pagination import PageRequest
from resolvers.access import fetch_node
from schema.context import AppContext
from schema.errors import typed_error
from schema.fleet import (
    FleetNode,
    FleetNodeConnection,
    FleetNodeFilter,
    LabelInput,
    NodeError,
    NodePayload,
    NodeProblem,
    RegisterNodeInput,
)
from schema.fleet_views import FleetCapacity, FleetEvent
from schema.relay import After, Before, First, Last, expect_global_id
from schema.sent_ids import quoting

ExpectedVersion = Annotated[
    int | None,
    strawberry.argument(
        description="The node's version as you saw it: the change is refused "
        "(VERSION_MISMATCH) if the node changed since. Leave it out to act on any version."
    ),
]
HostKey = Annotated[
    str | None,
    strawberry.argument(
        description="The host key to pin ('ssh-ed25519 AAAA...'); leave it out to pin the one "
        "met at the next contact."
    ),
]

Deadline = Annotated[
    datetime | None,
    strawberry.argument(
        description="When work still running on the node is stopped (reason DRAINED); with a "
        "zone, in the future, at most 30 days ahead (else INVALID_DEADLINE, nothing changed). "
        "Leave it out for one hour from now."
    ),
]
Force = Annotated[
    bool,
    strawberry.argument(
        description="On a node with GPUs assigned: stop its work now (reason DRAINED) and "
        "retire it once empty; the node is returned DRAINING. Without it such a node is "
        "refused (NODE_BUSY) and nothing changes."
    ),
]


def _kit(info: Info[AppContext, None]) -> FleetKit:
    if info.context.fleet is None:
        raise ServiceUnavailable("key service")
    return info.context.fleet


def _compute(info: Info[AppContext, None]) -> ComputeKit:
    if info.context.compute is None:
        raise ServiceUnavailable("key service")
    return info.context.compute


def node_error(exc: DomainError) -> NodeError:
    return typed_error(exc, NodeError, NodeProblem)


# --- Queries ----------------------------------------------------------------------------------


async def fleet_nodes(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
    filter: FleetNodeFilter | None = None,  # noqa: A002 - the GraphQL argument is called filter
) -> FleetNodeConnection:
    page = PageRequest.parse(first, after, last, before)
    wanted = filter or FleetNodeFilter()
    found = await node_services.list_nodes(
        info.context.uow(), NodeFilter(state=wanted.state, region=wanted.region), page
    )
    return FleetNodeConnection.from_page(found, FleetNode.from_domain)


async def fleet_node(info: Info[AppContext, None], id: strawberry.ID) -> FleetNode | None:  # noqa: A002
    found: FleetNode | None = await fetch_node(info, "FleetNode", expect_global_id(id, "FleetNode"))
    return found


async def capacity(info: Info[AppContext, None]) -> FleetCapacity:
    return FleetCapacity.from_domain(await node_services.capacity(info.context.uow()))


async def fleet_events(info: Info[AppContext, None]) -> AsyncGenerator[FleetEvent, None]:
    """Every fleet event from any process, as it happens (alerts included)."""
    ctx = info.context
    async with ctx.events.subscribe(FLEET_TOPIC) as stream:
        async for message in stream:  # each event once: the hub drops repeats
            yield FleetEvent.from_message(str(message["name"]), message["payload"])


# --- Mutations --------------------------------------------------------------------------------


def _labels(labels: list[LabelInput]) -> dict[str, str]:
    found: dict[str, str] = {}
    for label in labels:
        if label.key in found:
            raise InvalidInput(Problem(NodeErrorCode.INVALID_LABELS,
                                       f"Label {label.key[:64]!r} is given twice.", "labels"))  # fmt: skip
        found[label.key] = label.value
    return found


async def register_node(
    info: Info[AppContext, None],
    input: RegisterNodeInput,  # noqa: A002
) -> NodePayload | NodeError:
    ctx = info.context
    kit = _kit(info)
    try:
        spec = NodeSpec.create(
            name=input.name, host=input.host, port=input.port, ssh_user=input.ssh_user,
            private_key=input.private_key, use_ca=input.use_ca, host_key=input.host_key,
            region=input.region, labels=_labels(input.labels),
        )  # fmt: skip
        node = await node_services.register_node(kit, spec, ctx.principal, ctx.meta)
    except DomainError as exc:
        return node_error(exc)
    return NodePayload(node=FleetNode.from_domain(node))


async def _change(
    info: Info[AppContext, None], id: str, trigger: NodeTrigger,  # noqa: A002
    expected_version: int | None, host_key: str | None = None,
) -> NodePayload | NodeError:  # fmt: skip
    ctx = info.context
    kit = _kit(info)
    try:
        node_id = expect_global_id(id, "FleetNode")
        with quoting(id, node_id):
            node = await node_services.change_node(
                kit,
                node_id,
                trigger,
                ctx.principal,
                ctx.meta,
                expected_version=expected_version,
                host_key=host_key,
            )
    except DomainError as exc:
        return node_error(exc)
    ctx.loaders.fleet_node.prime(node_id, node, force=True)  # later reads see the change
    return NodePayload(node=FleetNode.from_domain(node))


async def cordon_node(
    info: Info[AppContext, None], id: strawberry.ID,  # noqa: A002
    expected_version: ExpectedVersion = None,
) -> NodePayload | NodeError:  # fmt: skip
    return await _change(info, id, NodeTrigger.CORDON, expected_version)


async def _emptying(
    info: Info[AppContext, None],
    id: str,  # noqa: A002
    act: Callable[[ComputeKit, int], Awaitable[DomainNode]],
) -> NodePayload | NodeError:
    ctx = info.context
    kit = _compute(info)
    try:
        node_id = expect_global_id(id, "FleetNode")
        with quoting(id, node_id):
            node = await act(kit, node_id)
    except DomainError as exc:
        return node_error(exc)
    ctx.loaders.fleet_node.prime(node_id, node, force=True)
    return NodePayload(node=FleetNode.from_domain(node))


async def drain_node(
    info: Info[AppContext, None],
    id: strawberry.ID,  # noqa: A002
    deadline: Deadline = None,
    expected_version: ExpectedVersion = None,
) -> NodePayload | NodeError:
    ctx = info.context
    return await _emptying(
        info,
        id,
        lambda kit, node_id: draining.drain_node(
            kit, node_id, deadline, ctx.principal, ctx.meta, expected_version=expected_version
        ),
    )


async def uncordon_node(
    info: Info[AppContext, None], id: strawberry.ID,  # noqa: A002
    expected_version: ExpectedVersion = None,
) -> NodePayload | NodeError:  # fmt: skip
    return await _change(info, id, NodeTrigger.UNCORDON, expected_version)


async def retire_node(
    info: Info[AppContext, None],
    id: strawberry.ID,  # noqa: A002
    force: Force = False,
    expected_version: ExpectedVersion = None,
) -> NodePayload | NodeError:
    ctx = info.context
    return await _emptying(
        info,
        id,
        lambda kit, node_id: draining.retire_node(
            kit, node_id, ctx.principal, ctx.meta, force=force, expected_version=expected_version
        ),
    )


async def readmit_node(
    info: Info[AppContext, None], id: strawberry.ID,  # noqa: A002
    host_key: HostKey = None, expected_version: ExpectedVersion = None,
) -> NodePayload | NodeError:  # fmt: skip
    return await _change(info, id, NodeTrigger.READMIT, expected_version, host_key)
