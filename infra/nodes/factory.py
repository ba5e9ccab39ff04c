"""Building the fleet's kit from settings, for the API (registration) and the worker (checks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from domain.compute.kit import AllocationPolicy, ComputeKit
from domain.fleet.health import HealthPolicy
from domain.fleet.kit import FleetKit
from domain.ledger.policy import LedgerPolicy
from domain.ports import KeyService, UnitOfWork
from infra.compute_settings import ComputeSettings
from infra.crypto.envelope import AesGcmCipher
from infra.fleet_settings import FleetSettings
from infra.nodes.connector import SshNodeConnector
from infra.nodes.decommission import SshNodeDecommissioner
from infra.nodes.keys import AsyncsshKeyCodec
from infra.nodes.layout import NodeLayout
from infra.nodes.operations import SshNodeOperations
from infra.nodes.ssh_ca import SshCertificateAuthority


def health_policy(fleet: FleetSettings) -> HealthPolicy:
    return HealthPolicy(
        probe_interval=timedelta(seconds=fleet.probe_interval_seconds),
        max_backoff=timedelta(seconds=fleet.probe_max_backoff_seconds),
        max_temperature_c=fleet.max_gpu_temperature_c,
        min_disk_free_mib=fleet.min_disk_free_mib,
        unreachable_grace=timedelta(seconds=fleet.unreachable_grace_seconds),
    )


def node_layout(fleet: FleetSettings) -> NodeLayout:
    return NodeLayout(
        trusted_ca_file=fleet.trusted_ca_file,
        sshd_dropin=fleet.sshd_dropin or None,
        device_dir=fleet.device_dir,
        gpu_group_prefix=fleet.gpu_group_prefix,
        udev_rules=fleet.udev_rules or None,
        data_dir=fleet.data_dir,
        home_dir=fleet.home_dir,
        sshd_config=fleet.sshd_config,
        sshd_reload=fleet.sshd_reload,
        nvidia_modprobe=fleet.nvidia_modprobe or None,
    )


def make_fleet_kit(
    fleet: FleetSettings, uow: Callable[[], UnitOfWork], kms: KeyService
) -> FleetKit:
    """No I/O: SSH connections are opened per check."""
    cipher = AesGcmCipher()
    ca = SshCertificateAuthority(uow, kms, cipher)
    connector = SshNodeConnector(
        ca, node_layout(fleet),
        connect_timeout=fleet.ssh_connect_timeout_seconds,
        command_timeout=fleet.ssh_command_timeout_seconds,
    )  # fmt: skip
    decommissioner = SshNodeDecommissioner(
        connector.dialer, node_layout(fleet), fleet.ssh_command_timeout_seconds
    )
    return FleetKit(
        uow=uow,
        kms=kms,
        cipher=cipher,
        codec=AsyncsshKeyCodec(),
        connector=connector,
        policy=health_policy(fleet),
        platform_group=fleet.platform_group,
        decommissioner=decommissioner,
    )


def allocation_policy(compute: ComputeSettings) -> AllocationPolicy:
    return AllocationPolicy(
        user_prefix=compute.user_prefix,
        billing_window=timedelta(seconds=compute.billing_window_seconds),
        provision_deadline=timedelta(seconds=compute.provision_deadline_seconds),
        keep_home=compute.keep_home,
        low_balance_grace=timedelta(seconds=compute.low_balance_grace_seconds),
        lease=timedelta(seconds=compute.engine_lease_seconds),
    )


def make_compute_kit(
    fleet: FleetSettings, compute: ComputeSettings, fleet_kit: FleetKit, ledger: LedgerPolicy
) -> ComputeKit:
    """No I/O: the node operations open their pooled connections on first use; `aclose()` on
    `kit.ops` closes them."""
    connector = fleet_kit.connector
    dialer = connector.dialer if isinstance(connector, SshNodeConnector) else None
    if dialer is None:  # a kit built by hand (tests) with another connector
        raise TypeError("the compute kit needs the fleet's SSH connector")
    ops = SshNodeOperations(
        dialer, node_layout(fleet), fleet_kit.platform_group, compute.user_prefix,
        per_node_limit=compute.node_concurrency,
        command_timeout=fleet.ssh_command_timeout_seconds,
    )  # fmt: skip
    return ComputeKit(uow=fleet_kit.uow, fleet=fleet_kit, ops=ops, ledger=ledger,
                      policy=allocation_policy(compute), clock=fleet_kit.clock)  # fmt: skip
