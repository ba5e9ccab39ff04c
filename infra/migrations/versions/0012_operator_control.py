"""Operator control: a node's drain deadline, retire-once-drained and what decommissioning left
behind; the DRAINED node state and the DECOMMISSIONED node event.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_STATES = (
    "bootstrapping",
    "ready",
    "unhealthy",
    "unreachable",
    "cordoned",
    "draining",
    "quarantined",
    "retired",
)
_KINDS = (
    "registered",
    "host_key_pinned",
    "step_started",
    "step_succeeded",
    "step_failed",
    "state_changed",
    "health_changed",
    "inventory_changed",
)


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _checks(states: tuple[str, ...], kinds: tuple[str, ...]) -> None:
    for table, name in (
        ("nodes", "state_known"),
        ("node_events", "state_known"),
        ("node_events", "kind_known"),
    ):
        op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    op.create_check_constraint(op.f("ck_nodes_state_known"), "nodes", f"state IN ({_in(states)})")
    op.create_check_constraint(
        op.f("ck_node_events_state_known"),
        "node_events",
        f"state IS NULL OR state IN ({_in(states)})",
    )
    op.create_check_constraint(
        op.f("ck_node_events_kind_known"), "node_events", f"kind IN ({_in(kinds)})"
    )


def upgrade() -> None:
    op.add_column("nodes", sa.Column("drain_deadline", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "nodes",
        sa.Column(
            "retire_when_drained", sa.Boolean(), nullable=False, server_default=sa.text("false")
        ),
    )
    op.add_column(
        "nodes",
        sa.Column("decommission_leftovers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    _checks((*_STATES, "drained"), (*_KINDS, "decommissioned"))


def downgrade() -> None:
    op.execute("UPDATE nodes SET state = 'draining' WHERE state = 'drained'")
    op.execute("UPDATE node_events SET state = 'draining' WHERE state = 'drained'")
    op.execute("DELETE FROM node_events WHERE kind = 'decommissioned'")
    _checks(_STATES, _KINDS)
    op.drop_column("nodes", "decommission_leftovers")
    op.drop_column("nodes", "retire_when_drained")
    op.drop_column("nodes", "drain_deadline")
