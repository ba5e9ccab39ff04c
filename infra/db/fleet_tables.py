"""The fleet: nodes, their GPUs, their event history, and which GPUs are handed out to whom."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from domain.fleet.nodes import NodeAuth, NodeHealth, NodeState
from domain.fleet.records import BootstrapStep, NodeEventKind
from infra.db.leases import lease_columns
from infra.db.secret_tables import secrets
from infra.db.tables import metadata


def _in(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


def _at(name: str, *, nullable: bool = True) -> Column[Any]:
    if nullable:
        return Column(name, DateTime(timezone=True), nullable=True)
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


nodes = Table(
    "nodes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("port", Integer, nullable=False),
    Column("ssh_user", Text, nullable=False),
    Column("auth", Text, nullable=False),
    Column(
        "credential_secret_id",
        BigInteger,
        ForeignKey(secrets.c.id, name="fk_nodes_credential_secret"),
        nullable=True,
    ),
    Column("host_key", Text, nullable=True),
    Column("region", Text, nullable=False),
    Column("labels", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("state", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("health", Text, nullable=False, server_default=NodeHealth.UNKNOWN.value),
    Column("reason_code", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("gpu_model", Text, nullable=True),  # canonical ("H200"), as SKUs name it
    Column("gpu_count", Integer, nullable=False, server_default="0"),
    Column("facts", JSONB, nullable=True),
    _at("bootstrapped_at"),
    _at("last_probe_at"),
    _at("unreachable_since"),
    Column("probe_failures", Integer, nullable=False, server_default="0"),
    # Present GPUs without an active assignment, kept by triggers on node_gpus and
    # gpu_assignments (migration 0006), so placement finds fitting nodes by index instead of
    # counting every GPU of the region on each request.
    Column("gpus_free", Integer, nullable=False, server_default="0"),
    # The CA public keys last written to the node's TrustedUserCAKeys file: a CA key may be
    # retired only once every node trusts its successor.
    Column("ca_keys", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    _at("next_probe_at"),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    _at("retired_at"),
    # Operator control (migration 0012): a drain's deadline, retire-once-drained, and what
    # retiring could not remove from the machine.
    _at("drain_deadline"),
    Column("retire_when_drained", Boolean, nullable=False, server_default=text("false")),
    Column("decommission_leftovers", JSONB, nullable=True),
    *lease_columns(),  # the fleet's lease on the node's checks (infra/db/leases.py)
    CheckConstraint("port BETWEEN 1 AND 65535", name="port_valid"),
    CheckConstraint(_in("auth", NodeAuth), name="auth_known"),
    # A key node carries its sealed key; a CA node must not (it would never be used or rotated).
    CheckConstraint(
        "(auth = 'key') = (credential_secret_id IS NOT NULL)", name="credential_matches_auth"
    ),
    CheckConstraint(_in("state", NodeState), name="state_known"),
    CheckConstraint(_in("health", NodeHealth), name="health_known"),
    CheckConstraint("(reason_code IS NULL) = (reason IS NULL)", name="reason_whole"),
    CheckConstraint("jsonb_typeof(labels) = 'object'", name="labels_object"),
    CheckConstraint("version >= 1 AND gpu_count >= 0 AND probe_failures >= 0", name="counts_valid"),
    CheckConstraint("(state = 'retired') = (retired_at IS NOT NULL)", name="retired_at_matches"),
    # Names are never reused, not even a retired node's: events and audit rows name nodes.
    UniqueConstraint("name", name="uq_nodes_name"),
)
# One live node per address; a retired node's address can be registered again.
Index("uq_nodes_live_address", nodes.c.host, nodes.c.port, unique=True,
      postgresql_where=text("state <> 'retired'"))  # fmt: skip
# claim_due reads the due rows in probe order; unscheduled nodes stay out of the index.
Index("ix_nodes_next_probe_at", nodes.c.next_probe_at,
      postgresql_where=text("next_probe_at IS NOT NULL"))  # fmt: skip
Index("ix_nodes_placement", nodes.c.region, nodes.c.gpus_free, nodes.c.id,
      postgresql_where=text("state = 'ready'"))  # fmt: skip

node_gpus = Table(
    "node_gpus",
    metadata,
    Column("node_id", BigInteger, ForeignKey("nodes.id", name="fk_node_gpus_node"), nullable=False),
    Column("gpu_index", Integer, nullable=False),
    Column("uuid", Text, nullable=False),
    Column("model", Text, nullable=False),  # as the driver names it, e.g. "NVIDIA H200"
    Column("memory_mib", Integer, nullable=False),
    Column("driver_version", Text, nullable=False),
    Column("mig_enabled", Boolean, nullable=False),
    Column("pci_bus_id", Text, nullable=False),
    # False once a probe no longer finds it; the row stays for the assignments that name it.
    Column("present", Boolean, nullable=False, server_default=text("true")),
    PrimaryKeyConstraint("node_id", "gpu_index", name="pk_node_gpus"),
    CheckConstraint("gpu_index >= 0 AND memory_mib >= 0", name="values_valid"),
)

node_events = Table(
    "node_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "node_id", BigInteger, ForeignKey("nodes.id", name="fk_node_events_node"), nullable=False
    ),
    Column("kind", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("step", Text, nullable=True),
    Column("state", Text, nullable=True),
    Column("reason_code", Text, nullable=True),
    _at("at", nullable=False),
    CheckConstraint(_in("kind", NodeEventKind), name="kind_known"),
    CheckConstraint(f"step IS NULL OR {_in('step', BootstrapStep)}", name="step_known"),
    CheckConstraint(f"state IS NULL OR {_in('state', NodeState)}", name="state_known"),
)
# A node's history, newest first, one page at a time.
Index("ix_node_events_node_id_id", node_events.c.node_id, node_events.c.id.desc())

gpu_assignments = Table(
    "gpu_assignments",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("node_id", BigInteger, nullable=False),
    Column("gpu_index", Integer, nullable=False),
    Column("holder", Text, nullable=False),
    _at("created_at", nullable=False),
    _at("released_at"),
    ForeignKeyConstraint(
        ["node_id", "gpu_index"],
        ["node_gpus.node_id", "node_gpus.gpu_index"],
        name="fk_gpu_assignments_gpu",
    ),
)
# The guarantee that no GPU is handed out twice, whatever races the code above loses.
Index("uq_gpu_assignments_active", gpu_assignments.c.node_id, gpu_assignments.c.gpu_index,
      unique=True, postgresql_where=text("released_at IS NULL"))  # fmt: skip
Index("ix_gpu_assignments_active_holder", gpu_assignments.c.holder,
      postgresql_where=text("released_at IS NULL"))  # fmt: skip
