"""Operator control where it reaches the node, against a real OpenSSH sshd on loopback: a removed
SSH key stops opening a running allocation (the engine rewrites authorized_keys), suspending a
user ends their open SSH session and their login, and retiring a node takes off it what
bootstrap put there.

These make real Linux users and groups (as root), named with random prefixes and deleted
afterwards (see tests/integration/test_allocation_lifecycle.py, whose fixtures they share)."""

from __future__ import annotations

import asyncio
import grp
import os
import stat
import subprocess

import asyncssh

from domain.audit.records import RequestMeta
from domain.compute.allocations import AllocationState
from domain.compute.draining import retire_node
from domain.compute.engine import advance
from domain.compute.operator import stop_user_work
from domain.compute.ssh_key_services import add_ssh_key, remove_ssh_key
from domain.fleet.nodes import NodeState
from domain.identity import admin
from domain.identity.accounts import AccountStatus
from domain.identity.principal import SYSTEM
from domain.identity.scopes import Role
from domain.pagination import PageRequest
from infra.nodes.keys import AsyncsshKeyCodec
from tests.integration.test_allocation_lifecycle import (  # noqa: F401 - shared fixtures
    World,
    _create,
    node_env,
    world,
)
from tests.support.compute import signed_in, stored_user

META = RequestMeta(request_id="test")


async def _connect(on: World, user: str, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    node = on.node
    known = asyncssh.import_known_hosts(f"[{node.host}]:{node.port} {node.host_key_public}\n")
    return await asyncssh.connect(
        node.host,
        node.port,
        username=user,
        known_hosts=known,
        client_keys=[key],
        agent_path=None,
        config=None,
        connect_timeout=10,
    )


async def _opens(on: World, user: str, key: asyncssh.SSHKey) -> bool:
    try:
        async with await _connect(on, user, key) as conn:
            return (await conn.run("true")).exit_status == 0
    except (asyncssh.PermissionDenied, asyncssh.DisconnectError):
        return False


def _group_exists(name: str) -> bool:
    return subprocess.run(["getent", "group", name], capture_output=True).returncode == 0


async def test_a_removed_key_stops_opening_a_running_allocation(world: World) -> None:  # noqa: F811
    spare = asyncssh.generate_private_key("ssh-ed25519")
    added = await add_ssh_key(
        world.kit.uow(),
        AsyncsshKeyCodec(),
        world.user,
        "spare",
        spare.export_public_key().decode(),
        META,
    )
    made = await _create(world, "two-keys", key_ids=[world.key_id, added.id])
    running = await advance(world.kit, made.id)
    assert running is not None and running.state is AllocationState.RUNNING
    assert running.username is not None
    assert await _opens(world, running.username, world.key)
    assert await _opens(world, running.username, spare)

    await remove_ssh_key(world.kit.uow(), world.user, world.key_id, META)
    async with world.kit.uow() as u:
        due = await u.allocations.get(made.id)
    assert due is not None and due.next_attempt_at is not None  # the engine has work

    rekeyed = await advance(world.kit, made.id)

    assert rekeyed is not None and rekeyed.state is AllocationState.RUNNING
    assert rekeyed.next_attempt_at is None and rekeyed.ssh_key_ids == (added.id,)
    assert not await _opens(world, running.username, world.key)
    assert await _opens(world, running.username, spare)


async def test_suspending_ends_the_users_ssh_session_and_login(world: World) -> None:  # noqa: F811
    running = await advance(world.kit, (await _create(world, "to-suspend")).id)
    assert running is not None and running.username is not None
    session = await _connect(world, running.username, world.key)
    shell = await session.create_process("sleep 600")
    admin_id = await stored_user(world.kit.uow, Role.ADMIN)
    operator = signed_in(admin_id, Role.ADMIN)
    assert world.user.user_id is not None

    await admin.set_status(
        world.kit.uow(), operator, world.user.user_id, AccountStatus.SUSPENDED, "abuse", META
    )
    assert await stop_user_work(world.kit, world.user.user_id, operator, META) == [running.id]
    stopped = await advance(world.kit, running.id)  # the engine's teardown

    assert stopped is not None and stopped.state is AllocationState.STOPPED
    assert stopped.stop_reason == "suspended"
    await asyncio.wait_for(shell.wait_closed(), 30)  # the open session was ended
    assert shell.exit_status != 0
    session.close()
    assert not await _opens(world, running.username, world.key)


async def test_retiring_decommissions_the_node(world: World) -> None:  # noqa: F811
    fleet = world.kit.fleet
    async with world.kit.uow() as u:
        node = await u.nodes.get(world.node_id)
    assert node is not None
    layout_root = world.node.root
    trusted, rules = layout_root / "trusted_ca_keys", layout_root / "udev.rules"
    devices = sorted((layout_root / "dev").glob("nvidia*"))
    gpu_groups = {grp.getgrgid(os.stat(d).st_gid).gr_name for d in devices}
    # What bootstrap left: trust, rule, device groups (mode 0660) and the platform group.
    assert trusted.exists() and rules.exists() and len(devices) == 8
    assert all(stat.S_IMODE(os.stat(d).st_mode) == 0o660 for d in devices)
    assert all(_group_exists(g) for g in (*gpu_groups, fleet.platform_group))

    retired = await retire_node(world.kit, world.node_id, SYSTEM, META)

    assert retired.state is NodeState.RETIRED
    assert retired.decommission_leftovers == ()
    assert not trusted.exists() and not rules.exists()
    for device in devices:
        info = os.stat(device)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o666), device
    assert not any(_group_exists(g) for g in (*gpu_groups, fleet.platform_group))
    async with world.kit.uow() as u:
        events = (await u.nodes.events(world.node_id, PageRequest(first=5, after_key=None))).items
    assert events[0][1].kind == "decommissioned"
