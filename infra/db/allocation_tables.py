"""Allocations: a user's GPUs on a node, the Linux account made for them, the hold that pays
for them, and the engine's bookkeeping (attempts, the next time it may act, the deadline)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from domain.compute.allocations import AllocationState
from infra.db.fleet_tables import nodes
from infra.db.leases import lease_columns
from infra.db.money_tables import ledger_holds
from infra.db.tables import metadata, skus, users

_STATES = ", ".join(repr(str(s)) for s in AllocationState)

allocations = Table(
    "allocations",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("user_id", BigInteger, ForeignKey(users.c.id), nullable=False),
    Column("sku_id", BigInteger, ForeignKey(skus.c.id), nullable=False),
    # The SKU's price when the allocation was made, the one the user accepted: what it is
    # billed at for its whole life, whatever the SKU's price becomes.
    Column("hourly_price_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("node_id", BigInteger, ForeignKey(nodes.c.id), nullable=True),
    Column("gpu_indices", ARRAY(Integer), nullable=False, server_default="{}"),
    Column("username", Text, nullable=True),
    Column("hold_id", BigInteger, ForeignKey(ledger_holds.c.id), nullable=True),
    Column("ssh_key_ids", ARRAY(BigInteger), nullable=False, server_default="{}"),
    # The public keys as they were when the allocation was made: removing a key from the
    # account later does not change what a running allocation was given.
    Column("public_keys", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("failure_code", Text, nullable=True),
    Column("failure_message", Text, nullable=True),
    Column("stop_reason", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("deadline", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("running_since", DateTime(timezone=True), nullable=True),
    Column("billed_until", DateTime(timezone=True), nullable=True),
    # Running time billed so far (time the node was unreachable past the grace left out):
    # the charge is always the cost of this total, so per-tick rounding never adds up.
    Column("billable_seconds", Float, nullable=False, server_default="0"),
    # Since when the balance could not reserve the next window; stopped after the grace.
    Column("low_balance_since", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    *lease_columns(),  # the engine's lease on the row (infra/db/leases.py)
    CheckConstraint(f"state IN ({_STATES})", name="state_known"),
    CheckConstraint("(failure_code IS NULL) = (failure_message IS NULL)", name="failure_whole"),
    CheckConstraint(
        "state NOT IN ('stopped', 'failed') OR ended_at IS NOT NULL", name="ended_at_when_ended"
    ),
    CheckConstraint("state <> 'failed' OR failure_code IS NOT NULL", name="failed_has_reason"),
    CheckConstraint("version >= 1 AND attempts >= 0", name="counts_valid"),
    CheckConstraint("hourly_price_minor > 0", name="price_positive"),
    UniqueConstraint("username", name="uq_allocations_username"),
)
Index("ix_allocations_user_id_id", allocations.c.user_id, allocations.c.id.desc())
# The engine's queue: only allocations with work pending carry a next_attempt_at.
Index("ix_allocations_next_attempt_at", allocations.c.next_attempt_at,
      postgresql_where=text("next_attempt_at IS NOT NULL"))  # fmt: skip
Index("ix_allocations_running", allocations.c.id,
      postgresql_where=text("state = 'running'"))  # fmt: skip
Index("ix_allocations_node_id", allocations.c.node_id,
      postgresql_where=text("state NOT IN ('stopped', 'failed')"))  # fmt: skip

# Each allocation's history, for its owner: every change of state, failed attempts, warnings.
allocation_events = Table(
    "allocation_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("allocation_id", BigInteger, ForeignKey(allocations.c.id), nullable=False),
    Column("kind", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"state IN ({_STATES})", name="state_known"),
)
Index("ix_allocation_events_allocation_id_id", allocation_events.c.allocation_id,
      allocation_events.c.id.desc())  # fmt: skip
