"""Node use cases an admin drives: register, cordon, uncordon, readmit, and the
reads behind the admin views. Every change locks the node row first, so two admins (or an admin
and the health loop) acting at once are applied one after the other, never one lost."""

from __future__ import annotations

from dataclasses import replace

from domain.audit.records import RequestMeta, audit
from domain.errors import Conflict, Problem
from domain.fleet.changes import fleet_event, store, view
from domain.fleet.kit import FleetKit
from domain.fleet.nodes import (
    Node,
    NodeAuth,
    NodeErrorCode,
    NodeHealth,
    NodeState,
    NodeTrigger,
    ReasonCode,
    next_state,
    node_not_found,
    transition,
)
from domain.fleet.records import CapacityRow, NewNode, NewNodeEvent, NodeEvent, NodeEventKind
from domain.fleet.records import NodeFilter as NodeFilter
from domain.fleet.registration import NodeSpec
from domain.identity.principal import Principal
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork
from domain.secret_services import seal
from domain.secrets import SecretPurpose

# Draining and retiring empty the node and clean the machine: domain/compute/draining.py.
_ACTIONS = {
    NodeTrigger.CORDON: "cordoned",
    NodeTrigger.UNCORDON: "uncordoned",
    NodeTrigger.READMIT: "readmitted",
}


async def register_node(kit: FleetKit, spec: NodeSpec, actor: Principal,
                        meta: RequestMeta) -> Node:  # fmt: skip
    """Store the node (its key sealed) as BOOTSTRAPPING with bootstrap due now; the worker's
    fleet loop picks it up. A given host key is pinned; otherwise the first contact's is."""
    fingerprint = kit.codec.fingerprint(spec.host_key) if spec.host_key else None
    if spec.private_key is not None:
        kit.codec.private_key_public_half(spec.private_key)  # refuses a key we could not use
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        if spec.auth is NodeAuth.CA and await uow.ssh_ca.current() is None:
            raise Conflict(Problem(NodeErrorCode.CA_NOT_FOUND,
                                   "No platform SSH CA yet: create it, or give a private key.",
                                   "useCa"))  # fmt: skip
        secret_id = None
        if spec.private_key is not None:
            ref = await seal(uow, kit.kms, kit.cipher, SecretPurpose.NODE_ADMIN_KEY,
                             spec.private_key.encode())  # fmt: skip
            secret_id = ref.id
        node = await uow.nodes.add(NewNode(
            name=spec.name, host=spec.host, port=spec.port, ssh_user=spec.ssh_user,
            auth=spec.auth, credential_secret_id=secret_id, host_key=spec.host_key,
            region=spec.region, labels=spec.labels, next_probe_at=now))  # fmt: skip
        pinned = (f"host key pinned as given ({fingerprint})" if fingerprint
                  else "host key will be recorded at first contact")  # fmt: skip
        await uow.nodes.add_event(NewNodeEvent(
            node.id, NodeEventKind.REGISTERED,
            f"registered {spec.ssh_user}@{spec.host}:{spec.port}; {pinned}",
            state=node.state))  # fmt: skip
        await uow.audit.append(audit(actor, meta, "fleet.node.registered", ("node", node.id),
                                     after={**view(node), "name": node.name, "host": node.host,
                                            "port": node.port, "auth": str(node.auth),
                                            "hostKey": fingerprint, "region": node.region}))  # fmt: skip
        uow.record(fleet_event("node.registered", node))
        await uow.commit()
        return node


async def change_node(
    kit: FleetKit, node_id: int, trigger: NodeTrigger, actor: Principal, meta: RequestMeta,
    *, expected_version: int | None = None, host_key: str | None = None,
) -> Node:  # fmt: skip
    """An admin's cordon, uncordon or readmit (drain and retire: domain/compute/draining.py). `expected_version`, when given,
    refuses the change if the node moved since the admin looked (VERSION_MISMATCH). Readmitting
    bootstraps the node again and pins `host_key` (None: record the one met at first contact),
    which is how a quarantined node whose key really changed comes back; other nodes keep
    their pin unless a new one is given."""
    if trigger not in _ACTIONS:
        raise ValueError(f"{trigger} is not an admin action")
    fingerprint = kit.codec.fingerprint(host_key) if host_key else None
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await uow.nodes.get(node_id, for_update=True)
        if before is None:
            raise node_not_found(node_id)
        if expected_version is not None and before.version != expected_version:
            raise Conflict(Problem(
                NodeErrorCode.VERSION_MISMATCH,
                f"Node {before.name} changed (version {before.version}, not "
                f"{expected_version}); reload it and try again.", "expectedVersion"))  # fmt: skip
        node = before
        next_state(before, trigger)  # a refused edge is named as such, before any other check
        if trigger is NodeTrigger.READMIT:
            # A given key is pinned. Without one the pin stays, except on a node quarantined
            # for its key: there, no key means "record the one met at the next contact".
            key = " ".join(host_key.split()[:2]) if host_key and host_key.strip() else None
            if key is None and not _quarantined_for_key(before):
                key = before.host_key
            node = replace(node, host_key=key, health=NodeHealth.UNKNOWN, probe_failures=0,
                           next_probe_at=now)  # fmt: skip
        after = transition(node, trigger, now)
        message = f"{_ACTIONS[trigger]} by an admin"
        if fingerprint:
            message += f"; host key pinned ({fingerprint})"
        saved = await store(uow, before, after, f"fleet.node.{_ACTIONS[trigger]}",
                            message=message, actor=actor, meta=meta, now=now)  # fmt: skip
        await uow.commit()
        return saved


def _quarantined_for_key(node: Node) -> bool:
    return (node.state is NodeState.QUARANTINED and node.reason is not None
            and node.reason.code is ReasonCode.HOST_KEY_MISMATCH)  # fmt: skip


async def get_node(uow: UnitOfWork, node_id: int) -> Node | None:
    async with uow:
        return await uow.nodes.get(node_id)


async def list_nodes(uow: UnitOfWork, node_filter: NodeFilter, page: PageRequest) -> Page[Node]:
    async with uow:
        return await uow.nodes.list(node_filter, page)


async def node_events(uow: UnitOfWork, node_id: int, page: PageRequest) -> Page[NodeEvent]:
    async with uow:
        return await uow.nodes.events(node_id, page)


async def capacity(uow: UnitOfWork) -> list[CapacityRow]:
    async with uow:
        return list(await uow.placements.capacity())
