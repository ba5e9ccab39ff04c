"""The node repository: nodes, their recorded GPUs and their event history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import Conflict, Problem
from domain.fleet.inventory import GpuInfo, NodeGpu
from domain.fleet.nodes import (
    Node,
    NodeAuth,
    NodeErrorCode,
    NodeFacts,
    NodeHealth,
    NodeState,
    Reason,
    ReasonCode,
)
from domain.fleet.records import (
    BootstrapStep,
    NewNode,
    NewNodeEvent,
    NodeEvent,
    NodeEventKind,
    NodeFilter,
)
from domain.fleet.registration import address_taken, name_taken
from domain.leases import Claimed
from domain.pagination import Page, PageRequest
from infra.db.arrays import among
from infra.db.fleet_tables import node_events, node_gpus, nodes
from infra.db.leases import LeasedRows
from infra.db.paging import keyset_page


def _to_node(row: Any) -> Node:
    return Node(
        id=row.id,
        name=row.name,
        host=row.host,
        port=row.port,
        ssh_user=row.ssh_user,
        auth=NodeAuth(row.auth),
        credential_secret_id=row.credential_secret_id,
        host_key=row.host_key,
        region=row.region,
        labels=dict(row.labels),
        state=NodeState(row.state),
        version=row.version,
        health=NodeHealth(row.health),
        reason=None if row.reason_code is None else Reason(ReasonCode(row.reason_code), row.reason),
        gpu_model=row.gpu_model,
        gpu_count=row.gpu_count,
        facts=None if row.facts is None else NodeFacts(**row.facts),
        bootstrapped_at=row.bootstrapped_at,
        last_probe_at=row.last_probe_at,
        unreachable_since=row.unreachable_since,
        probe_failures=row.probe_failures,
        ca_keys=tuple(row.ca_keys),
        next_probe_at=row.next_probe_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        retired_at=row.retired_at,
        drain_deadline=row.drain_deadline,
        retire_when_drained=row.retire_when_drained,
        decommission_leftovers=None
        if row.decommission_leftovers is None
        else tuple(row.decommission_leftovers),
        lease_token=row.lease_token,
    )


def _mutable(node: Node) -> dict[str, Any]:
    """The columns `save` writes: everything but identity, address and credentials."""
    return {
        "state": node.state.value,
        "version": node.version,
        "health": node.health.value,
        "reason_code": None if node.reason is None else node.reason.code.value,
        "reason": None if node.reason is None else node.reason.message,
        "host_key": node.host_key,
        "labels": dict(node.labels),
        "gpu_model": node.gpu_model,
        "gpu_count": node.gpu_count,
        "facts": None if node.facts is None else asdict(node.facts),
        "bootstrapped_at": node.bootstrapped_at,
        "last_probe_at": node.last_probe_at,
        "unreachable_since": node.unreachable_since,
        "probe_failures": node.probe_failures,
        "ca_keys": list(node.ca_keys),
        "next_probe_at": node.next_probe_at,
        "updated_at": node.updated_at,
        "retired_at": node.retired_at,
        "drain_deadline": node.drain_deadline,
        "retire_when_drained": node.retire_when_drained,
        "decommission_leftovers": None
        if node.decommission_leftovers is None
        else list(node.decommission_leftovers),
    }


def _to_gpu(row: Any) -> NodeGpu:
    return NodeGpu(node_id=row.node_id, index=row.gpu_index, uuid=row.uuid, model=row.model,
                   memory_mib=row.memory_mib, driver_version=row.driver_version,
                   mig_enabled=row.mig_enabled, pci_bus_id=row.pci_bus_id,
                   present=row.present)  # fmt: skip


def _to_event(row: Any) -> NodeEvent:
    return NodeEvent(
        id=row.id,
        node_id=row.node_id,
        kind=NodeEventKind(row.kind),
        message=row.message,
        step=None if row.step is None else BootstrapStep(row.step),
        state=None if row.state is None else NodeState(row.state),
        reason_code=row.reason_code,
        at=row.at,
    )


# Insert or refresh every reported GPU in one statement, whatever their number.
_UPSERT_GPUS = text("""
    INSERT INTO node_gpus (node_id, gpu_index, uuid, model, memory_mib, driver_version,
                           mig_enabled, pci_bus_id, present)
    SELECT CAST(:node_id AS bigint), g.*, true
      FROM unnest(CAST(:index AS int[]), CAST(:uuid AS text[]), CAST(:model AS text[]),
                  CAST(:memory AS int[]), CAST(:driver AS text[]), CAST(:mig AS boolean[]),
                  CAST(:pci AS text[])) AS g
    ON CONFLICT (node_id, gpu_index) DO UPDATE
       SET uuid = excluded.uuid, model = excluded.model, memory_mib = excluded.memory_mib,
           driver_version = excluded.driver_version, mig_enabled = excluded.mig_enabled,
           pci_bus_id = excluded.pci_bus_id, present = true
""")

_MARK_MISSING = text("""
    UPDATE node_gpus SET present = false
     WHERE node_id = :node_id AND present AND gpu_index <> ALL(CAST(:index AS int[]))
""")


class SqlNodeRepository(LeasedRows):
    _leased = nodes
    _due_column = "next_probe_at"

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, node: NewNode) -> Node:
        stmt = (
            insert(nodes)
            .values(
                name=node.name,
                host=node.host,
                port=node.port,
                ssh_user=node.ssh_user,
                auth=node.auth.value,
                credential_secret_id=node.credential_secret_id,
                host_key=node.host_key,
                region=node.region,
                labels=dict(node.labels),
                state=NodeState.BOOTSTRAPPING.value,
                next_probe_at=node.next_probe_at,
            )
            .returning(nodes)
        )
        try:
            return _to_node((await self._conn.execute(stmt)).one())
        except IntegrityError as exc:
            if "uq_nodes_name" in str(exc.orig):
                raise name_taken(node.name) from exc
            if "uq_nodes_live_address" in str(exc.orig):
                raise address_taken(node.host, node.port) from exc
            raise

    async def get(self, node_id: int, *, for_update: bool = False) -> Node | None:
        stmt = select(nodes).where(nodes.c.id == node_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _to_node(row)

    async def get_many(self, node_ids: Sequence[int]) -> dict[int, Node]:
        if not node_ids:
            return {}
        rows = await self._conn.execute(select(nodes).where(among(nodes.c.id, node_ids)))
        return {row.id: _to_node(row) for row in rows}

    async def list(self, node_filter: NodeFilter, page: PageRequest) -> Page[Node]:
        stmt = select(nodes)
        if node_filter.state is not None:
            stmt = stmt.where(nodes.c.state == node_filter.state.value)
        if node_filter.region is not None:
            stmt = stmt.where(nodes.c.region == node_filter.region)
        return await keyset_page(self._conn, stmt, nodes.c.id, page, _to_node)

    async def save(self, node: Node) -> Node:
        stmt = (
            update(nodes)
            .where(nodes.c.id == node.id, nodes.c.version == node.version - 1)
            .values(_mutable(node))
            .returning(nodes)
        )
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            raise Conflict(Problem(
                NodeErrorCode.VERSION_MISMATCH,
                f"Node {node.name} was changed by someone else; reload it and try again.", "id",
            ))  # fmt: skip
        return _to_node(row)

    async def gpus(self, node_ids: Sequence[int]) -> dict[int, Sequence[NodeGpu]]:
        found: dict[int, list[NodeGpu]] = {node_id: [] for node_id in node_ids}
        if not node_ids:
            return {}
        stmt = (
            select(node_gpus)
            .where(node_gpus.c.node_id.in_(list(node_ids)))
            .order_by(node_gpus.c.node_id, node_gpus.c.gpu_index)
        )
        for row in await self._conn.execute(stmt):
            found[row.node_id].append(_to_gpu(row))
        return {node_id: gpus for node_id, gpus in found.items()}

    async def record_gpus(self, node_id: int, gpus: Sequence[GpuInfo]) -> None:
        indices = [g.index for g in gpus]
        if gpus:
            await self._conn.execute(_UPSERT_GPUS, {
                "node_id": node_id, "index": indices, "uuid": [g.uuid for g in gpus],
                "model": [g.model for g in gpus], "memory": [g.memory_mib for g in gpus],
                "driver": [g.driver_version for g in gpus],
                "mig": [g.mig_enabled for g in gpus], "pci": [g.pci_bus_id for g in gpus],
            })  # fmt: skip
        await self._conn.execute(_MARK_MISSING, {"node_id": node_id, "index": indices})

    async def add_event(self, event: NewNodeEvent) -> NodeEvent:
        stmt = (
            insert(node_events)
            .values(
                node_id=event.node_id,
                kind=event.kind.value,
                message=event.message,
                step=None if event.step is None else event.step.value,
                state=None if event.state is None else event.state.value,
                reason_code=event.reason_code,
            )
            .returning(node_events)
        )
        return _to_event((await self._conn.execute(stmt)).one())

    async def events_by_id(self, event_ids: Sequence[int]) -> dict[int, NodeEvent]:
        stmt = select(node_events).where(node_events.c.id.in_(list(event_ids)))
        return {row.id: _to_event(row) for row in await self._conn.execute(stmt)}

    async def events(self, node_id: int, page: PageRequest) -> Page[NodeEvent]:
        stmt = select(node_events).where(node_events.c.node_id == node_id)
        return await keyset_page(self._conn, stmt, node_events.c.id, page, _to_event,
                                 descending=True)  # fmt: skip

    async def lagging_ca(self, public_key: str) -> Sequence[str]:
        rows = await self._conn.execute(
            select(nodes.c.name)
            .where(nodes.c.state != NodeState.RETIRED.value,
                   ~nodes.c.ca_keys.contains(func.jsonb_build_array(public_key)))
            .order_by(nodes.c.name)
        )  # fmt: skip
        return list(rows.scalars())

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> Sequence[Claimed]:
        rows = await self._claim_rows(now, lease, limit)
        return [Claimed(row.id, row.lease_token) for row in rows]
