"""What a terminal test needs before it opens a terminal: a READY loopback node with eight fake
H200s that trusts a fresh platform CA, an H200 SKU, and RUNNING allocations on it, made in the
test's process as the worker would make them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import asyncssh

from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.compute.allocation_services import create_allocation
from domain.compute.allocations import Allocation, AllocationState
from domain.compute.engine import advance
from domain.compute.kit import ComputeKit
from domain.compute.ssh_key_services import add_ssh_key
from domain.fleet.ca_services import create_ca
from domain.fleet.checks import check_node
from domain.fleet.nodes import NodeState
from domain.ports import UnitOfWork
from infra.compute_settings import ComputeSettings
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms
from infra.fleet_settings import FleetSettings
from infra.nodes.factory import make_compute_kit
from infra.nodes.keys import AsyncsshKeyCodec
from infra.nodes.ssh_ca import AsyncsshCaSigner
from infra.payment_settings import ledger_policy
from infra.settings import Settings
from tests.support.accounts import open_node_root, serve_user_keys, user_prefix
from tests.support.catalog import make_spec
from tests.support.compute import credit, signed_in
from tests.support.fleet import fake_devices, fleet_settings, group_prefix, kit_for, register
from tests.support.ssh_node import EIGHT_H200, SshNode, running_node

META = RequestMeta(request_id="test")


@dataclass(frozen=True)
class H200Node:
    node: SshNode
    groups: str  # the node's group prefix
    prefix: str  # the allocation users' prefix
    fleet: FleetSettings
    compute: ComputeSettings
    kit: ComputeKit
    sku_id: int


async def h200_node(
    stack: contextlib.AsyncExitStack, uow: Callable[[], UnitOfWork], settings: Settings
) -> H200Node:
    """The node, registered and READY; everything it made goes when `stack` closes."""
    kms = LocalKms(settings.kms_key_file)
    ca_keys = [(await create_ca(uow(), kms, AesGcmCipher(), AsyncsshCaSigner())).public_key]
    root = stack.enter_context(open_node_root())
    groups = stack.enter_context(group_prefix())
    prefix = stack.enter_context(user_prefix())
    node = stack.enter_context(running_node(root, report=EIGHT_H200, trusted_ca_keys=ca_keys))
    serve_user_keys(node)
    fake_devices(node, 8)
    fleet = fleet_settings(node.root, groups)
    compute = replace(settings.compute, user_prefix=prefix)
    fleet_kit = kit_for(uow, kms, fleet)
    kit = make_compute_kit(fleet, compute, fleet_kit, ledger_policy(settings.payments))
    stack.push_async_callback(kit.ops.aclose)  # type: ignore[attr-defined]
    ready = await check_node(fleet_kit, (await register(fleet_kit, node)).id)
    assert ready is not None and ready.state is NodeState.READY, ready
    spec = make_spec(
        "h200x1", gpu_model="H200", region="eu-west", vcpus=8, ram_gib=64, disk_gib=100
    )
    sku = await add_sku(uow(), spec)
    return H200Node(node, groups, prefix, fleet, compute, kit, sku.id)


async def running_allocation(
    uow: Callable[[], UnitOfWork], on: H200Node, user_id: int, name: str
) -> Allocation:
    """A RUNNING allocation of the node's SKU for the user (credited, with an SSH key)."""
    user = signed_in(user_id)
    async with uow() as u:
        await credit(u.ledger, user_id, 100_000)
        await u.commit()
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    added = await add_ssh_key(uow(), AsyncsshKeyCodec(), user, "laptop", key, META)
    placed = await create_allocation(on.kit, user, on.sku_id, [added.id], name, META)
    running = await advance(on.kit, placed.id)
    assert running is not None and running.state is AllocationState.RUNNING
    return running
