"""Real `gpucloud worker` processes provisioning on a real sshd node: the node, the workers'
environment, a world to allocate in (a ready node, a 2-GPU SKU, a funded user with a key) and
the small waits the engine's end-to-end tests share."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.compute.kit import ComputeKit
from domain.compute.ssh_key_services import add_ssh_key
from domain.fleet.checks import check_node
from domain.fleet.nodes import NodeState
from domain.identity.principal import Principal
from domain.identity.scopes import Role
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
    node_env,
    register,
)
from tests.support.ssh_node import EIGHT_H200, SshNode, running_node

META = RequestMeta(request_id="test")
Uow = Callable[[], UnitOfWork]


@dataclass(frozen=True)
class EngineNode:
    node: SshNode
    groups: str  # the test's group-name prefix
    prefix: str  # the test's account-name prefix


@contextmanager
def engine_node() -> Iterator[EngineNode]:
    """An sshd node with 8 stand-in GPUs, reading each allocation user's own keys."""
    with (
        open_node_root() as root,
        group_prefix() as groups,
        user_prefix() as prefix,
        running_node(root, report=EIGHT_H200) as node,
    ):
        serve_user_keys(node)
        fake_devices(node, 8)
        yield EngineNode(node, groups, prefix)


def worker_env(service_env: dict[str, str], where: EngineNode, lease: float) -> dict[str, str]:
    return {
        **service_env,
        # A namespace of its own: no other test's worker takes these jobs, nor this one theirs.
        "GPUCLOUD_REDIS_NAMESPACE": f"{service_env['GPUCLOUD_REDIS_NAMESPACE']}-{secrets.token_hex(3)}",
        **node_env(where.node.root, where.groups, where.prefix),
        "GPUCLOUD_ENGINE_TICK_SECONDS": "0.1",
        "GPUCLOUD_ENGINE_LEASE_SECONDS": str(lease),
    }


@dataclass(frozen=True)
class EngineWorld:
    kit: ComputeKit
    user: Principal
    key_id: int


async def engine_world(
    uow: Uow, settings: Settings, service_env: dict[str, str], where: EngineNode
) -> EngineWorld:
    """The node registered and READY, an "h200x2" SKU, a funded user with one SSH key."""
    fleet = fleet_settings(where.node.root, where.groups)
    fleet_kit = kit_for(uow, LocalKms(service_env["GPUCLOUD_KMS_KEY_FILE"]), fleet)
    kit = make_compute_kit(
        fleet,
        replace(settings.compute, user_prefix=where.prefix),
        fleet_kit,
        ledger_policy(settings.payments),
    )
    ready = await check_node(fleet_kit, (await register(fleet_kit, where.node)).id)
    assert ready is not None and ready.state is NodeState.READY
    await add_sku(
        uow(),
        SkuSpec.create(
            name="h200x2",
            gpu_model="H200",
            gpu_count=2,
            vcpus=8,
            ram_gib=64,
            disk_gib=100,
            region="eu-west",
            hourly_price_minor=3600,
            currency="USD",
        ),
    )
    async with uow() as u:
        made = await u.users.add(f"{where.prefix}@example.com", None, Role.USER)
        await credit(u.ledger, made.id, 1_000_000)
        await u.commit()
    user = signed_in(made.id)
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    key = await add_ssh_key(uow(), AsyncsshKeyCodec(), user, "k", public, META)
    return EngineWorld(kit, user, key.id)


async def state_of(engine: AsyncEngine, allocation_id: int) -> str:
    async with engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    text("SELECT state FROM allocations WHERE id = :id"), {"id": allocation_id}
                )
            ).scalar_one()
        )


async def is_in(engine: AsyncEngine, allocation_id: int, state: str) -> bool:
    return await state_of(engine, allocation_id) == state


async def until(check: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        await asyncio.sleep(0.01)


def slow_node_commands(node: SshNode, log: Path, delay: float) -> None:
    """Stand-ins on the node's PATH: `useradd` waits `delay` seconds before the real one runs,
    and it and `usermod` log each call (pid and arguments) to `log` first. Every ensure calls
    `usermod -p ...` exactly once, so those lines count the ensures that ran."""
    for name, pause in (("useradd", delay), ("usermod", 0.0)):
        real = shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
        assert real is not None, f"no {name} on this machine"
        stand_in = node.bin_dir / name
        stand_in.write_text(
            f'#!/bin/sh\necho "{name} $*" >>{log}\nsleep {pause}\nexec {real} "$@"\n'
        )
        stand_in.chmod(0o755)


def calls(log: Path, name: str, user: str) -> list[str]:
    """The logged calls of `name` (slow_node_commands) naming `user`."""
    if not log.exists():
        return []
    return [
        line
        for line in log.read_text().splitlines()
        if line.startswith(f"{name} ") and line.split()[-1] == user
    ]
