"""The real `gpucloud worker` killed with SIGKILL at the allocation's step boundaries, against a
real sshd node and PostgreSQL: after each restart the allocation converges, and at the end there
is no orphan account, one hold, one charge and a clean ledger.

Kills: right after PROVISIONING is committed (the account is being made on the node), right after
RUNNING is committed, and during teardown once the account is gone from the node but before (or
just after) STOPPED is committed. The engine's lease is short here, so a dead worker's claim comes
due again within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.compute.allocation_services import create_allocation, stop_allocation
from domain.ports import UnitOfWork
from infra.settings import Settings
from tests.support.engine_workers import (
    EngineNode,
    engine_node,
    engine_world,
    is_in,
    state_of,
    until,
    worker_env,
)
from tests.support.processes import Process

META = RequestMeta(request_id="test")
Uow = Callable[[], UnitOfWork]
LEASE = 1.5


def _kill(worker: Process) -> None:
    os.killpg(worker.proc.pid, signal.SIGKILL)  # no chance to finish anything
    worker.proc.wait(10)
    worker.stop()


def _exists(user: str) -> bool:
    return subprocess.run(["getent", "passwd", user], capture_output=True).returncode == 0


def _accounts_with(prefix: str) -> list[str]:
    lines = Path("/etc/passwd").read_text().splitlines()
    return [line.split(":", 1)[0] for line in lines if line.startswith(prefix)]


@pytest.fixture
def where() -> Iterator[EngineNode]:
    with engine_node() as made:
        yield made


async def test_sigkill_at_each_step_boundary_converges_without_orphans_or_double_charges(
    uow: Uow, engine: AsyncEngine, settings: Settings, service_env: dict[str, str],
    where: EngineNode, tmp_path: Path,
) -> None:  # fmt: skip
    world = await engine_world(uow, settings, service_env, where)
    kit, user, prefix = world.kit, world.user, where.prefix
    placed = await create_allocation(kit, user, 1, [world.key_id], "crash", META)
    assert placed.username is not None
    env = worker_env(service_env, where, LEASE)
    runs = 0

    def start() -> Process:
        nonlocal runs
        runs += 1
        return Process(["worker"], env, tmp_path / f"worker-{runs}.log")

    # 1. Killed right after PROVISIONING is committed, while the account is being made.
    worker = start()
    await until(lambda: state_of(engine, placed.id), "claimed")
    await until(lambda: is_in(engine, placed.id, "provisioning"), "provisioning")
    _kill(worker)
    # 2. Restarted: the lease runs out, the step is done again; killed right after RUNNING.
    worker = start()
    await until(lambda: is_in(engine, placed.id, "running"), "running", timeout=90)
    _kill(worker)
    assert _exists(placed.username)
    # 3. Stopped by the user; killed in teardown once the account is gone from the node.
    await stop_allocation(kit, user, placed.id, META)
    worker = start()
    await until(lambda: not _exists(placed.username or ""), "account removed", timeout=90)
    _kill(worker)
    # 4. Restarted once more: it converges.
    worker = start()
    try:
        await until(lambda: is_in(engine, placed.id, "stopped"), "stopped", timeout=90)
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
