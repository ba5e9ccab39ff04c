"""Building the fleet's kit from settings, for the API (registration) and the worker (checks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from domain.fleet.health import HealthPolicy
from domain.fleet.kit import FleetKit
from domain.ports import KeyService, UnitOfWork
from infra.crypto.envelope import AesGcmCipher
from infra.fleet_settings import FleetSettings
from infra.nodes.connector import SshNodeConnector
from infra.nodes.keys import AsyncsshKeyCodec
from infra.nodes.layout import NodeLayout
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
    return FleetKit(uow=uow, kms=kms, cipher=cipher, codec=AsyncsshKeyCodec(),
                    connector=connector, policy=health_policy(fleet),
                    platform_group=fleet.platform_group)  # fmt: skip
