"""The real `gpucloud worker` killed with SIGKILL at the allocation's step boundaries, against a
real sshd node and PostgreSQL: after each restart the allocation converges, and at the end there
is no orphan account, one hold, one charge and a clean ledger.

Kills: right after PROVISIONING is committed (the account is being made on the node), right after
RUNNING is committed, and during teardown once the account is gone from the node but before (or
just after) STOPPED is committed. The engine's lease is short here, so a dead worker's claim comes
due again within seconds."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.compute.allocation_services import create_allocation, stop_allocation
from domain.compute.ssh_key_services import add_ssh_key
from domain.fleet.checks import check_node
from domain.fleet.nodes import NodeState
from domain.identity.scopes import Role
from domain.ports import UnitOfWork
from infra.crypto.local_kms import LocalKms
from infra.nodes.factory import make_compute_kit
from infra.nodes.keys import AsyncsshKeyCodec
from infra.payment_settings import ledger_policy
from infra.settings import Settings
from tests.support.accounts import open_node_root, serve_user_keys, user_prefix
from tests.support.compute import credit, signed_in
from tests.support.fleet import fake_devices, fleet_settings, group_prefix, kit_for, register
from tests.support.processes import Process
from tests.support.ssh_node import EIGHT_H200, SshNode, running_node

META = RequestMeta(request_id="test")
Uow = Callable[[], UnitOfWork]
LEASE = 1.5


@pytest.fixture
def node_env() -> Iterator[tuple[SshNode, str, str]]:
    with (open_node_root() as root, group_prefix() as groups, user_prefix() as prefix,
          running_node(root, report=EIGHT_H200) as node):  # fmt: skip
        serve_user_keys(node)
        fake_devices(node, 8)
        yield node, groups, prefix


def _worker_env(service_env: dict[str, str], node: SshNode, groups: str,
                prefix: str) -> dict[str, str]:  # fmt: skip
    root = node.root
    return {
        **service_env,
        # A namespace of its own: no other test's worker takes these jobs, nor this one theirs.
        "GPUCLOUD_REDIS_NAMESPACE": f"{service_env['GPUCLOUD_REDIS_NAMESPACE']}-{secrets.token_hex(3)}",
        "GPUCLOUD_NODE_TRUSTED_CA_FILE": str(root / "trusted_ca_keys"),
        "GPUCLOUD_NODE_SSHD_DROPIN": "none", "GPUCLOUD_NODE_UDEV_RULES": "none",
        "GPUCLOUD_NODE_NVIDIA_MODPROBE": "none",
        "GPUCLOUD_NODE_DEVICE_DIR": str(root / "dev"), "GPUCLOUD_NODE_DATA_DIR": str(root),
        "GPUCLOUD_NODE_HOME_DIR": str(root / "home"),
        "GPUCLOUD_NODE_GPU_GROUP_PREFIX": f"{groups}g",
        "GPUCLOUD_NODE_PLATFORM_GROUP": f"{groups}p",
        "GPUCLOUD_ALLOCATION_USER_PREFIX": prefix,
        "GPUCLOUD_ENGINE_TICK_SECONDS": "0.1", "GPUCLOUD_ENGINE_LEASE_SECONDS": str(LEASE),
        "GPUCLOUD_MIN_DISK_FREE_MIB": "1",
    }  # fmt: skip


async def _state(engine: AsyncEngine, allocation_id: int) -> str:
    async with engine.connect() as conn:
        return str((await conn.execute(text("SELECT state FROM allocations WHERE id = :id"),
                                       {"id": allocation_id})).scalar_one())  # fmt: skip


async def _until(check: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        await asyncio.sleep(0.01)


def _kill(worker: Process) -> None:
    os.killpg(worker.proc.pid, signal.SIGKILL)  # no chance to finish anything
    worker.proc.wait(10)
    worker.stop()


def _exists(user: str) -> bool:
    return subprocess.run(["getent", "passwd", user], capture_output=True).returncode == 0


def _accounts_with(prefix: str) -> list[str]:
    lines = Path("/etc/passwd").read_text().splitlines()
    return [line.split(":", 1)[0] for line in lines if line.startswith(prefix)]


async def test_sigkill_at_each_step_boundary_converges_without_orphans_or_double_charges(
    uow: Uow, engine: AsyncEngine, settings: Settings, service_env: dict[str, str],
    node_env: tuple[SshNode, str, str], tmp_path: Path,
) -> None:  # fmt: skip
    node, groups, prefix = node_env
    fleet = fleet_settings(node.root, groups)
    fleet_kit = kit_for(uow, LocalKms(service_env["GPUCLOUD_KMS_KEY_FILE"]), fleet)
    kit = make_compute_kit(fleet, replace(settings.compute, user_prefix=prefix), fleet_kit,
                           ledger_policy(settings.payments))  # fmt: skip
    ready = await check_node(fleet_kit, (await register(fleet_kit, node)).id)
    assert ready is not None and ready.state is NodeState.READY
    await add_sku(uow(), SkuSpec.create(
        name="h200x2", gpu_model="H200", gpu_count=2, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=3600, currency="USD"))  # fmt: skip
    async with uow() as u:
        made = await u.users.add("crash@example.com", None, Role.USER)
        await credit(u.ledger, made.id, 1_000_000)
        await u.commit()
    user = signed_in(made.id)
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    key = await add_ssh_key(uow(), AsyncsshKeyCodec(), user, "k", public, META)
    placed = await create_allocation(kit, user, 1, [key.id], "crash", META)
    assert placed.username is not None
    env = _worker_env(service_env, node, groups, prefix)
    runs = 0

    def start() -> Process:
        nonlocal runs
        runs += 1
        return Process(["worker"], env, tmp_path / f"worker-{runs}.log")

    # 1. Killed right after PROVISIONING is committed, while the account is being made.
    worker = start()
    await _until(lambda: _state(engine, placed.id), "claimed")
    await _until(lambda: _is(engine, placed.id, "provisioning"), "provisioning")
    _kill(worker)
    # 2. Restarted: the lease runs out, the step is done again; killed right after RUNNING.
    worker = start()
    await _until(lambda: _is(engine, placed.id, "running"), "running", timeout=90)
    _kill(worker)
    assert _exists(placed.username)
    # 3. Stopped by the user; killed in teardown once the account is gone from the node.
    await stop_allocation(kit, user, placed.id, META)
    worker = start()
    await _until(lambda: not _exists(placed.username or ""), "account removed", timeout=90)
    _kill(worker)
    # 4. Restarted once more: it converges.
    worker = start()
    try:
        await _until(lambda: _is(engine, placed.id, "stopped"), "stopped", timeout=90)
    finally:
        worker.stop()

    assert _accounts_with(prefix) == []  # no orphan account
    async with engine.connect() as conn:
        holds = (await conn.execute(text(
            "SELECT count(*) FROM ledger_holds WHERE reference = :r"),
            {"r": f"allocation:{placed.id}"})).scalar_one()  # fmt: skip
        captures = (await conn.execute(text(
            "SELECT count(*) FROM ledger_transfers t JOIN ledger_holds h ON h.id = t.hold_id "
            "WHERE h.reference = :r AND t.phase = 'post_pending'"),
            {"r": f"allocation:{placed.id}"})).scalar_one()  # fmt: skip
        active = (await conn.execute(text(
            "SELECT count(*) FROM gpu_assignments WHERE released_at IS NULL"))).scalar_one()  # fmt: skip
    assert holds == 1 and captures == 1 and active == 0
    async with uow() as u:
        assert (await u.ledger.verify()).problems == []


async def _is(engine: AsyncEngine, allocation_id: int, state: str) -> bool:
    return await _state(engine, allocation_id) == state
