"""The fleet: nodes (with their sealed SSH credential), their GPUs, their event history, and GPU
assignments (at most one active per GPU, enforced by a partial unique index).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("ssh_user", sa.Text(), nullable=False),
        sa.Column("auth", sa.Text(), nullable=False),
        sa.Column("credential_secret_id", sa.BigInteger(), nullable=True),
        sa.Column("host_key", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column(
            "labels",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("health", sa.Text(), server_default="unknown", nullable=False),
        sa.Column("reason_code", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("gpu_model", sa.Text(), nullable=True),
        sa.Column("gpu_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("facts", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("bootstrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unreachable_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("gpus_free", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "ca_keys",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("next_probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(auth = 'key') = (credential_secret_id IS NOT NULL)",
            name=op.f("ck_nodes_credential_matches_auth"),
        ),
        sa.CheckConstraint(
            "(state = 'retired') = (retired_at IS NOT NULL)",
            name=op.f("ck_nodes_retired_at_matches"),
        ),
        sa.CheckConstraint("auth IN ('key', 'ca')", name=op.f("ck_nodes_auth_known")),
        sa.CheckConstraint(
            "health IN ('unknown', 'ok', 'unhealthy', 'unreachable')",
            name=op.f("ck_nodes_health_known"),
        ),
        sa.CheckConstraint("jsonb_typeof(labels) = 'object'", name=op.f("ck_nodes_labels_object")),
        sa.CheckConstraint(
            "state IN ('bootstrapping', 'ready', 'unhealthy', 'unreachable', 'cordoned', 'draining', 'quarantined', 'retired')",
            name=op.f("ck_nodes_state_known"),
        ),
        sa.CheckConstraint(
            "(reason_code IS NULL) = (reason IS NULL)", name=op.f("ck_nodes_reason_whole")
        ),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name=op.f("ck_nodes_port_valid")),
        sa.CheckConstraint(
            "version >= 1 AND gpu_count >= 0 AND probe_failures >= 0",
            name=op.f("ck_nodes_counts_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["credential_secret_id"], ["secrets.id"], name="fk_nodes_credential_secret"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("name", name="uq_nodes_name"),
    )
    op.create_index(
        "ix_nodes_next_probe_at",
        "nodes",
        ["next_probe_at"],
        unique=False,
        postgresql_where=sa.text("next_probe_at IS NOT NULL"),
    )
    op.create_index(
        "ix_nodes_placement",
        "nodes",
        ["region", "gpus_free", "id"],
        unique=False,
        postgresql_where=sa.text("state = 'ready'"),
    )
    op.create_index(
        "uq_nodes_live_address",
        "nodes",
        ["host", "port"],
        unique=True,
        postgresql_where=sa.text("state <> 'retired'"),
    )
    op.create_table(
        "node_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("node_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.Text(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "kind IN ('registered', 'host_key_pinned', 'step_started', 'step_succeeded', 'step_failed', 'state_changed', 'health_changed', 'inventory_changed')",
            name=op.f("ck_node_events_kind_known"),
        ),
        sa.CheckConstraint(
            "state IS NULL OR state IN ('bootstrapping', 'ready', 'unhealthy', 'unreachable', 'cordoned', 'draining', 'quarantined', 'retired')",
            name=op.f("ck_node_events_state_known"),
        ),
        sa.CheckConstraint(
            "step IS NULL OR step IN ('connect', 'os', 'gpus', 'facts', 'prepare')",
            name=op.f("ck_node_events_step_known"),
        ),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_node_events_node"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_events")),
    )
    op.create_index(
        "ix_node_events_node_id_id",
        "node_events",
        ["node_id", sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_table(
        "node_gpus",
        sa.Column("node_id", sa.BigInteger(), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("driver_version", sa.Text(), nullable=False),
        sa.Column("mig_enabled", sa.Boolean(), nullable=False),
        sa.Column("pci_bus_id", sa.Text(), nullable=False),
        sa.Column("present", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.CheckConstraint(
            "gpu_index >= 0 AND memory_mib >= 0", name=op.f("ck_node_gpus_values_valid")
        ),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_node_gpus_node"),
        sa.PrimaryKeyConstraint("node_id", "gpu_index", name="pk_node_gpus"),
    )
    op.create_table(
        "gpu_assignments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("node_id", sa.BigInteger(), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id", "gpu_index"],
            ["node_gpus.node_id", "node_gpus.gpu_index"],
            name="fk_gpu_assignments_gpu",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpu_assignments")),
    )
    op.create_index(
        "ix_gpu_assignments_active_holder",
        "gpu_assignments",
        ["holder"],
        unique=False,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_index(
        "uq_gpu_assignments_active",
        "gpu_assignments",
        ["node_id", "gpu_index"],
        unique=True,
        postgresql_where=sa.text("released_at IS NULL"),
    )

    # nodes.gpus_free follows every change of a node's GPUs or assignments, in the same
    # transaction: recounted for the one node a row belongs to.
    op.execute("""
        CREATE FUNCTION fleet_recount_free() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            node bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.node_id ELSE NEW.node_id END;
        BEGIN
            UPDATE nodes SET gpus_free = (
                SELECT count(*) FROM node_gpus g
                 WHERE g.node_id = node AND g.present
                   AND NOT EXISTS (SELECT 1 FROM gpu_assignments a
                                    WHERE a.node_id = g.node_id AND a.gpu_index = g.gpu_index
                                      AND a.released_at IS NULL))
             WHERE id = node;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER node_gpus_recount_free
        AFTER INSERT OR DELETE OR UPDATE OF present ON node_gpus
        FOR EACH ROW EXECUTE FUNCTION fleet_recount_free()
    """)
    op.execute("""
        CREATE TRIGGER gpu_assignments_recount_free
        AFTER INSERT OR DELETE OR UPDATE OF released_at ON gpu_assignments
        FOR EACH ROW EXECUTE FUNCTION fleet_recount_free()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER gpu_assignments_recount_free ON gpu_assignments")
    op.execute("DROP TRIGGER node_gpus_recount_free ON node_gpus")
    op.execute("DROP FUNCTION fleet_recount_free()")
    op.drop_index("uq_gpu_assignments_active", table_name="gpu_assignments")
    op.drop_index("ix_gpu_assignments_active_holder", table_name="gpu_assignments")
    op.drop_table("gpu_assignments")
    op.drop_table("node_gpus")
    op.drop_index("ix_node_events_node_id_id", table_name="node_events")
    op.drop_table("node_events")
    op.drop_index("uq_nodes_live_address", table_name="nodes")
    op.drop_index("ix_nodes_placement", table_name="nodes")
    op.drop_index("ix_nodes_next_probe_at", table_name="nodes")
    op.drop_table("nodes")
