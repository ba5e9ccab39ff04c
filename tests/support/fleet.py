"""A fleet kit wired to real PostgreSQL, a local KMS and test nodes on loopback sshd.

Node paths (trusted CA file, device nodes, udev rule, data dir) point into the test node's own
directory, and group names carry a random prefix removed at the end, so running the suite as
root changes nothing else on this machine.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain.audit.records import RequestMeta
from domain.errors import Conflict
from domain.fleet.ca_services import create_ca
from domain.fleet.inventory import GpuInfo
from domain.fleet.kit import FleetKit
from domain.fleet.node_services import register_node
from domain.fleet.nodes import Node, NodeAuth, NodeHealth, NodeState, NodeTrigger, transition
from domain.fleet.records import NewNode
from domain.fleet.registration import NodeSpec
from domain.identity.principal import SYSTEM
from domain.ports import KeyService, UnitOfWork
from infra.fleet_settings import FleetSettings
from infra.nodes.factory import make_fleet_kit
from infra.nodes.nvidia_smi import parse_query_csv
from infra.nodes.ssh_ca import AsyncsshCaSigner
from tests.support.accounts import open_node_root
from tests.support.ssh_node import EIGHT_H200, ONE_H200, SshNode, running_node

META = RequestMeta(request_id="test")


def fleet_settings(node_root: Path, prefix: str) -> FleetSettings:
    return FleetSettings(
        tick_seconds=0.2, probe_interval_seconds=30, probe_max_backoff_seconds=300,
        unreachable_grace_seconds=60, max_gpu_temperature_c=85, min_disk_free_mib=1,
        platform_group=f"{prefix}p", ssh_connect_timeout_seconds=5,
        ssh_command_timeout_seconds=20, trusted_ca_file=str(node_root / "trusted_ca_keys"),
        sshd_dropin=str(node_root / "sshd_config.d" / "60-gpucloud.conf"),
        device_dir=str(node_root / "dev"), gpu_group_prefix=f"{prefix}g",
        udev_rules=str(node_root / "udev.rules"), data_dir=str(node_root),
        home_dir=str(node_root / "home"), sshd_config=str(node_root / "sshd_config"),
        sshd_reload="signal", nvidia_modprobe=str(node_root / "gpucloud-nvidia.conf"),
    )  # fmt: skip


def fake_devices(node: SshNode, count: int) -> None:
    """Stand-ins for /dev/nvidiaN (regular files: permissions and groups work the same)."""
    dev = node.root / "dev"
    dev.mkdir(exist_ok=True)
    for index in range(count):
        (dev / f"nvidia{index}").touch(mode=0o666)


@contextmanager
def group_prefix() -> Iterator[str]:
    """A random group-name prefix; every group made under it is deleted afterwards."""
    prefix = f"gpct{secrets.token_hex(3)}"
    try:
        yield prefix
    finally:
        groups = Path("/etc/group").read_text().splitlines()
        for line in groups:
            name = line.split(":", 1)[0]
            if name.startswith(prefix):
                subprocess.run(["groupdel", name], check=False, capture_output=True)


def kit_for(uow: Callable[[], UnitOfWork], kms: KeyService, settings: FleetSettings) -> FleetKit:
    return make_fleet_kit(settings, uow, kms)


async def ensure_ca(kit: FleetKit) -> None:
    """The platform CA exists: bootstrap makes a node READY only after a login with one of its
    certificates."""
    uow = kit.uow()
    async with uow:
        if await uow.ssh_ca.current() is not None:
            return
    with contextlib.suppress(Conflict):  # made meanwhile
        await create_ca(kit.uow(), kit.kms, kit.cipher, AsyncsshCaSigner())


async def register(
    kit: FleetKit,
    node: SshNode,
    name: str = "gpu-1",
    *,
    host_key: str | None = None,
    private_key: str | None = None,
    use_ca: bool = False,
    region: str = "eu-west",
    with_ca: bool = True,
) -> Node:
    """Register the node (with the platform CA made first, unless `with_ca` is False)."""
    if with_ca:
        await ensure_ca(kit)
    spec = NodeSpec.create(
        name=name, host=node.host, port=node.port, ssh_user=node.user,
        private_key=None if use_ca else (private_key or node.client_key.read_text()),
        use_ca=use_ca, host_key=host_key, region=region, labels={"test": "yes"},
    )  # fmt: skip
    return await register_node(kit, spec, SYSTEM, META)


def with_policy(kit: FleetKit, **changes: object) -> FleetKit:
    return replace(kit, policy=replace(kit.policy, **changes))  # type: ignore[arg-type]


def h200s(count: int, node_tag: str) -> list[GpuInfo]:
    """`count` GPUs like the captured H200's, each with its own index and UUID."""
    template = parse_query_csv(ONE_H200["query"].read_text())[0]
    return [replace(template, index=i, uuid=f"GPU-{node_tag}-{i:04d}",
                    pci_bus_id=f"00000000:{i:02X}:00.0") for i in range(count)]  # fmt: skip


async def seed_node(uow: UnitOfWork, name: str, *, gpus: int = 8, region: str = "eu-west",
                    state: NodeState = NodeState.READY, port: int = 22) -> Node:  # fmt: skip
    """A node as bootstrap leaves it (inventoried, ready), written straight to the database:
    for placement and capacity tests that need fleets, not SSH."""
    now = datetime.now(UTC)
    async with uow:
        added = await uow.nodes.add(NewNode(
            name=name, host=f"{name}.test", port=port, ssh_user="root", auth=NodeAuth.CA,
            credential_secret_id=None, host_key=None, region=region, labels={},
            next_probe_at=now + timedelta(days=1)))  # fmt: skip
        await uow.nodes.record_gpus(added.id, h200s(gpus, name))
        node = replace(added, gpu_model="H200", gpu_count=gpus, bootstrapped_at=now,
                       health=NodeHealth.OK)  # fmt: skip
        node = await uow.nodes.save(transition(node, NodeTrigger.BOOTSTRAPPED, now))
        if state is not NodeState.READY:
            node = transition(node, {NodeState.CORDONED: NodeTrigger.CORDON,
                                     NodeState.DRAINING: NodeTrigger.DRAIN,
                                     NodeState.UNREACHABLE: NodeTrigger.PROBE_UNREACHABLE,
                                     NodeState.UNHEALTHY: NodeTrigger.PROBE_UNHEALTHY}[state], now)  # fmt: skip
            node = await uow.nodes.save(node)
        await uow.commit()
        return node


def node_env(root: Path, groups: str, prefix: str) -> dict[str, str]:
    """The settings a `gpucloud` process needs for a loopback node rooted at `root` (files,
    devices and homes under it; no sshd drop-in, udev rule or NVIDIA option written), with
    the GPU and platform groups made from `groups` and allocation users named `prefix<id>`."""
    return {
        "GPUCLOUD_NODE_TRUSTED_CA_FILE": str(root / "trusted_ca_keys"),
        "GPUCLOUD_NODE_SSHD_DROPIN": "none",
        "GPUCLOUD_NODE_UDEV_RULES": "none",
        "GPUCLOUD_NODE_NVIDIA_MODPROBE": "none",
        "GPUCLOUD_NODE_DEVICE_DIR": str(root / "dev"),
        "GPUCLOUD_NODE_DATA_DIR": str(root),
        "GPUCLOUD_NODE_HOME_DIR": str(root / "home"),
        "GPUCLOUD_NODE_GPU_GROUP_PREFIX": f"{groups}g",
        "GPUCLOUD_NODE_PLATFORM_GROUP": f"{groups}p",
        "GPUCLOUD_ALLOCATION_USER_PREFIX": prefix,
        "GPUCLOUD_MIN_DISK_FREE_MIB": "1",
    }


@contextmanager
def eight_gpu_node() -> Iterator[SshNode]:
    """A loopback node reporting 8 H200s, with their stand-in devices, under a root others may
    enter: the isolation check opens the devices as `nobody`."""
    with open_node_root() as root, running_node(root, report=EIGHT_H200) as started:
        fake_devices(started, 8)
        yield started
