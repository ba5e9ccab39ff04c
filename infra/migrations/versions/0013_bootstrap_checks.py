"""Node events for the bootstrap checks: the isolation and certificate-login steps, and the
operator's `action_needed` (e.g. reload the NVIDIA driver).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_KINDS = (
    "registered",
    "host_key_pinned",
    "step_started",
    "step_succeeded",
    "step_failed",
    "state_changed",
    "health_changed",
    "inventory_changed",
    "decommissioned",  # 0012
)
_STEPS = ("connect", "os", "gpus", "facts", "prepare")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _constrain(kinds: tuple[str, ...], steps: tuple[str, ...]) -> None:
    kind, step = op.f("ck_node_events_kind_known"), op.f("ck_node_events_step_known")
    op.drop_constraint(kind, "node_events", type_="check")
    op.drop_constraint(step, "node_events", type_="check")
    op.create_check_constraint(kind, "node_events", f"kind IN ({_in(kinds)})")
    op.create_check_constraint(step, "node_events", f"step IS NULL OR step IN ({_in(steps)})")


def upgrade() -> None:
    _constrain((*_KINDS, "action_needed"), (*_STEPS, "isolation", "cert_login"))


def downgrade() -> None:
    op.execute(
        "DELETE FROM node_events WHERE kind = 'action_needed' "
        "OR step IN ('isolation', 'cert_login')"
    )
    _constrain(_KINDS, _STEPS)
