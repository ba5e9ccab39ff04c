"""An allocation's whole life against a real OpenSSH sshd on loopback and real PostgreSQL: placed
with a hold, provisioned as a Linux user who logs in with their own key and sees exactly their
GPUs, billed to the second on stop, and torn down so they cannot log in; a node lost mid-
provisioning fails the allocation with nothing billed, and the teardown finishes when it is back.

These make real Linux users (as root), named with a random prefix and deleted afterwards."""

from __future__ import annotations

import grp
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.compute.accounts import AccountSpec, account_name
from domain.compute.allocation_services import create_allocation, stop_allocation
from domain.compute.allocations import Allocation, AllocationState, FailureCode
from domain.compute.engine import advance
from domain.compute.kit import AllocationPolicy, ComputeKit, usage_cost
from domain.compute.reconcile import reconcile_node
from domain.compute.ssh_key_services import add_ssh_key
from domain.fleet.checks import check_node
from domain.fleet.nodes import NodeState
from domain.fleet.remote import NodeTarget
from domain.fleet.targets import node_target
from domain.identity.principal import Principal
from domain.identity.scopes import Role
from domain.ledger.holds import HoldStatus
from domain.ports import UnitOfWork
from infra.crypto.local_kms import LocalKms
from infra.nodes.factory import make_compute_kit
from infra.nodes.keys import AsyncsshKeyCodec
from infra.payment_settings import ledger_policy
from infra.settings import Settings
from tests.support.accounts import open_node_root, serve_user_keys, user_prefix
from tests.support.compute import credit, signed_in
from tests.support.fleet import (
    fake_devices,
    fleet_settings,
    group_prefix,
    kit_for,
    register,
)
from tests.support.processes import free_port
from tests.support.ssh_node import EIGHT_H200, SshNode, running_node

META = RequestMeta(request_id="test")
PRICE = 3600  # per GPU-hour in minor units: one unit per second, so the arithmetic reads plainly
Uow = Callable[[], UnitOfWork]


@dataclass(frozen=True)
class World:
    kit: ComputeKit
    node: SshNode
    node_id: int
    user: Principal
    key: asyncssh.SSHKey
    key_id: int
    sku_id: int


async def _user(uow: Uow, email: str, funds: int) -> Principal:
    async with uow() as u:
        made = await u.users.add(email, None, Role.USER)
        await credit(u.ledger, made.id, funds)
        await u.commit()
    return signed_in(made.id)


@pytest.fixture
def node_env() -> Iterator[tuple[SshNode, str, str]]:
    with (open_node_root() as root, group_prefix() as groups, user_prefix() as prefix,
          running_node(root, report=EIGHT_H200) as node):  # fmt: skip
        serve_user_keys(node)
        fake_devices(node, 8)
        yield node, groups, prefix


@pytest.fixture
async def world(uow: Uow, settings: Settings, tmp_path: Path,
                node_env: tuple[SshNode, str, str]) -> AsyncIterator[World]:  # fmt: skip
    node, groups, prefix = node_env
    fleet = fleet_settings(node.root, groups)
    fleet_kit = kit_for(uow, LocalKms.create(tmp_path / "keys.json"), fleet)
    compute = replace(settings.compute, user_prefix=prefix)
    kit = make_compute_kit(fleet, compute, fleet_kit, ledger_policy(settings.payments))
    kit = replace(kit, policy=replace(kit.policy, retry_base=timedelta(0)))
    registered = await register(fleet_kit, node)
    ready = await check_node(fleet_kit, registered.id)
    assert ready is not None and ready.state is NodeState.READY, ready
    sku = await add_sku(uow(), SkuSpec.create(
        name="h200x1", gpu_model="H200", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=PRICE, currency="USD"))  # fmt: skip
    user = await _user(uow, "ada@example.com", 100_000)
    key = asyncssh.generate_private_key("ssh-ed25519")
    added = await add_ssh_key(uow(), AsyncsshKeyCodec(), user, "laptop",
                              key.export_public_key().decode(), META)  # fmt: skip
    try:
        yield World(kit, node, ready.id, user, key, added.id, sku.id)
    finally:
        await kit.ops.aclose()  # type: ignore[attr-defined]


async def _login(world: World, user: str, command: str) -> str:
    node = world.node
    known = asyncssh.import_known_hosts(f"[{node.host}]:{node.port} {node.host_key_public}\n")
    async with asyncssh.connect(node.host, node.port, username=user, known_hosts=known,
                                client_keys=[world.key], agent_path=None, config=None,
                                connect_timeout=10) as conn:  # fmt: skip
        result = await conn.run(command)
    return f"{result.exit_status}:{str(result.stdout).strip()}{str(result.stderr).strip()}"


async def _hold(world: World, allocation: Allocation) -> tuple[HoldStatus, int, int]:
    assert allocation.hold_id is not None
    async with world.kit.uow() as u:
        hold = (await u.ledger.holds([allocation.hold_id]))[allocation.hold_id]
    return hold.status, hold.amount, hold.captured


async def _create(world: World, key: str, user: Principal | None = None,
                  key_ids: list[int] | None = None) -> Allocation:  # fmt: skip
    return await create_allocation(world.kit, user or world.user, world.sku_id,
                                   key_ids or [world.key_id], key, META)  # fmt: skip


def _exists(user: str) -> bool:
    return subprocess.run(["getent", "passwd", user], capture_output=True).returncode == 0


async def test_full_lifecycle_login_gpus_billing_and_teardown(world: World) -> None:
    placed = await _create(world, "first")
    assert placed.state is AllocationState.PLACED and placed.gpu_indices == (0,)
    window = world.kit.policy.billing_window.total_seconds()
    assert await _hold(world, placed) == (HoldStatus.OPEN, usage_cost(PRICE, window), 0)

    running = await advance(world.kit, placed.id)

    assert running is not None and running.state is AllocationState.RUNNING
    assert running.username is not None and _exists(running.username)
    # The user logs in with their own key and sees exactly their GPU.
    assert await _login(world, running.username, "echo $CUDA_VISIBLE_DEVICES") == "0:0"
    own = world.node.root / "dev" / "nvidia0"
    assert (await _login(world, running.username, f"head -c0 {own} && echo ok")) == "0:ok"

    stopping = await stop_allocation(world.kit, world.user, placed.id, META)
    assert stopping.state is AllocationState.STOPPING
    status, _, captured = await _hold(world, stopping)
    assert running.running_since is not None and stopping.updated_at is not None
    billed = (stopping.updated_at - running.running_since).total_seconds()
    assert status is HoldStatus.CAPTURED and captured == usage_cost(PRICE, billed)  # to the second

    stopped = await advance(world.kit, placed.id)

    assert stopped is not None and stopped.state is AllocationState.STOPPED
    assert not _exists(running.username)
    with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
        await _login(world, running.username, "true")
    async with world.kit.uow() as u:
        assert await u.placements.active_on(world.node_id) == 0  # the GPU is free again
    assert await advance(world.kit, placed.id) == stopped  # a late message changes nothing
    async with world.kit.uow() as u:  # its history, oldest first
        history = list(reversed((await u.allocations.events([placed.id], 50))[placed.id]))
    assert [(e.kind, str(e.state)) for e in history] == [
        ("state_changed", "placed"), ("state_changed", "provisioning"),
        ("state_changed", "running"), ("state_changed", "stopping"),
        ("state_changed", "stopped")]  # fmt: skip
    assert history[0].message == "created -> PLACED"  # states as the API spells them


async def test_one_allocation_cannot_open_anothers_gpu(world: World, uow: Uow) -> None:
    a = await advance(world.kit, (await _create(world, "a")).id)
    b = await advance(world.kit, (await _create(world, "b")).id)
    assert a is not None and b is not None and a.username and b.username
    assert (a.gpu_indices, b.gpu_indices) == ((0,), (1,))
    theirs = world.node.root / "dev" / "nvidia1"
    denied = await _login(world, a.username, f"head -c0 {theirs}")
    assert denied.startswith("1:") and "Permission denied" in denied
    assert await _login(world, b.username, f"head -c0 {theirs} && echo ok") == "0:ok"


async def test_the_same_idempotency_key_makes_one_allocation(world: World) -> None:
    first = await _create(world, "same")
    again = await _create(world, "same")
    assert again.id == first.id
    async with world.kit.uow() as u:
        assert await u.placements.active_on(world.node_id) == 1


async def test_a_node_lost_mid_provisioning_fails_unbilled_and_is_torn_down_on_return(
    world: World, engine: AsyncEngine
) -> None:
    placed = await _create(world, "lost")
    real_port = world.node.port
    await _move_node(engine, world.node_id, free_port())  # the network to the node goes away
    kit = replace(world.kit, policy=AllocationPolicy(
        user_prefix=world.kit.policy.user_prefix, provision_deadline=timedelta(0),
        retry_base=timedelta(0)))  # fmt: skip

    failing = await advance(kit, placed.id)

    assert failing is not None and failing.state is AllocationState.STOPPING
    assert failing.failure is not None and failing.failure.code is FailureCode.NODE_UNREACHABLE
    assert (await _hold(world, failing))[::2] == (HoldStatus.VOIDED, 0)  # nothing billed
    still = await advance(kit, placed.id)  # the node is still away: teardown waits
    assert still is not None and still.state is AllocationState.STOPPING and still.attempts == 1
    async with world.kit.uow() as u:
        latest = (await u.allocations.events([placed.id], 1))[placed.id][0]
    assert latest.kind == "attempt_failed" and "attempt 1 failed" in latest.message
    await _move_node(engine, world.node_id, real_port)  # the node is back
    failed = await advance(kit, placed.id)
    assert failed is not None and failed.state is AllocationState.FAILED
    assert failing.username is not None and not _exists(failing.username)
    async with world.kit.uow() as u:
        assert await u.placements.active_on(world.node_id) == 0


async def _move_node(engine: AsyncEngine, node_id: int, port: int) -> None:
    """Point the node's address elsewhere (no admin API changes an address: this stands in
    for the network to the node going away and coming back)."""
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE nodes SET port = :port WHERE id = :id"),
                           {"port": port, "id": node_id})  # fmt: skip


async def _actions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT action FROM audit_events ORDER BY id"))
        return list(rows.scalars())


async def test_the_reconciler_removes_orphans_and_restores_drifted_accounts(
    world: World, engine: AsyncEngine
) -> None:
    running = await advance(world.kit, (await _create(world, "r")).id)
    assert running is not None and running.username is not None
    async with world.kit.uow() as u:
        node = await u.nodes.get(world.node_id)
        assert node is not None
        target = await node_target(world.kit.fleet, u, node, "test")
    # Drift: an account nobody owns (its allocation never existed), and the running
    # allocation's account lost its GPU group (someone edited /etc/group by hand).
    orphan = account_name(world.kit.policy.user_prefix, 999_999)
    await world.kit.ops.ensure_account(target, AccountSpec(orphan, [], (5,)), 0)
    gpu_group = f"{grp.getgrgid(os.stat(world.node.root / 'dev' / 'nvidia0').st_gid).gr_name}"
    subprocess.run(["gpasswd", "-d", running.username, gpu_group], check=True,
                   capture_output=True)  # fmt: skip

    repairs = await reconcile_node(world.kit, world.node_id)

    assert repairs.orphans_removed == [orphan] and not _exists(orphan)
    assert repairs.accounts_restored == [running.username]
    groups = await _login(world, running.username, "id -nG")
    assert groups.startswith("0:") and gpu_group in groups.split()
    actions = await _actions(engine)
    assert "node.orphan_account_removed" in actions and "allocation.account_restored" in actions
    again = await reconcile_node(world.kit, world.node_id)  # nothing left to repair
    assert again == type(again)()


async def test_the_reconciler_leaves_the_engines_work_alone(world: World) -> None:
    placed = await _create(world, "busy")  # PLACED: its account does not exist yet
    async with world.kit.uow() as u:
        node = await u.nodes.get(world.node_id)
        assert node is not None
        target = await node_target(world.kit.fleet, u, node, "test")
    assert placed.username is not None
    await world.kit.ops.ensure_account(target, AccountSpec(placed.username, [], (0,)), 0)
    repairs = await reconcile_node(world.kit, world.node_id)
    assert repairs.orphans_removed == [] and _exists(placed.username)  # mid-provisioning


class _StopFirst:
    """The node operations, but the first restore finds the allocation stopped and torn down
    meanwhile (the reconciler read RUNNING just before the user's stop)."""

    def __init__(self, world: World, allocation_id: int) -> None:
        self._world, self._id, self._ops = world, allocation_id, world.kit.ops

    def __getattr__(self, name: str) -> object:
        return getattr(self._ops, name)

    async def ensure_account(self, target: NodeTarget, account: AccountSpec, fence: int) -> None:
        await stop_allocation(self._world.kit, self._world.user, self._id, META)
        stopped = await advance(self._world.kit, self._id)
        assert stopped is not None and stopped.state is AllocationState.STOPPED
        await self._ops.ensure_account(target, account, fence)


async def test_a_restore_racing_a_stop_cannot_bring_the_account_back(world: World) -> None:
    running = await advance(world.kit, (await _create(world, "race")).id)
    assert running is not None and running.username is not None
    gpu_group = f"{grp.getgrgid(os.stat(world.node.root / 'dev' / 'nvidia0').st_gid).gr_name}"
    subprocess.run(
        ["gpasswd", "-d", running.username, gpu_group], check=True, capture_output=True
    )  # drift: the reconciler restores it
    kit = replace(world.kit, ops=_StopFirst(world, running.id))

    repairs = await reconcile_node(kit, world.node_id)

    # The node refused the restore (the teardown's fence is newer, its tombstone is there):
    # no account, and the allocation stays STOPPED rather than being failed for it.
    assert repairs.accounts_restored == [] and repairs.allocations_failed == []
    assert not _exists(running.username)
    async with world.kit.uow() as u:
        final = await u.allocations.get(running.id)
    assert final is not None and final.state is AllocationState.STOPPED
