"""Leases and fencing with real `gpucloud worker` processes and a real sshd node, the node's
`useradd` made slower than the engine's lease (issue 16's faults):

- two workers and a provisioning command several leases long: the step is claimed once, so the
  account script runs once (the heartbeat keeps the lease; the row is not due again meanwhile);
- a stop while the ensure is in flight on the node: the teardown waits for it on the node's
  per-account lock (or makes it a no-op), so from the moment STOPPED is committed no account of
  the allocation exists, watched continuously until well after the ensure would have ended."""

from __future__ import annotations

import asyncio
import threading
import time
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
    calls,
    engine_node,
    engine_world,
    is_in,
    slow_node_commands,
    until,
    worker_env,
)
from tests.support.processes import Process

META = RequestMeta(request_id="test")
Uow = Callable[[], UnitOfWork]
LEASE = 1.0
SLOW = 5.0  # useradd's delay: five leases


@pytest.fixture
def where() -> Iterator[EngineNode]:
    with engine_node() as made:
        yield made


def _workers(env: dict[str, str], logs: Path, count: int) -> list[Process]:
    return [Process(["worker"], env, logs / f"worker-{n}.log") for n in range(count)]


async def _states(engine: AsyncEngine, allocation_id: int) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT state FROM allocation_events WHERE allocation_id = :id ORDER BY id"),
            {"id": allocation_id},
        )
        return [str(state) for state in rows.scalars()]


async def test_two_workers_run_a_step_slower_than_the_lease_once(
    uow: Uow,
    engine: AsyncEngine,
    settings: Settings,
    service_env: dict[str, str],
    where: EngineNode,
    tmp_path: Path,
) -> None:
    world = await engine_world(uow, settings, service_env, where)
    log = tmp_path / "node-commands.log"
    slow_node_commands(where.node, log, SLOW)
    placed = await create_allocation(world.kit, world.user, 1, [world.key_id], "slow", META)
    assert placed.username is not None
    workers = _workers(worker_env(service_env, where, LEASE), tmp_path, 2)
    try:
        await until(lambda: is_in(engine, placed.id, "running"), "running", timeout=90)
    finally:
        for worker in workers:
            worker.stop()
    assert len(calls(log, "useradd", placed.username)) == 1
    ensures = [c for c in calls(log, "usermod", placed.username) if " -p " in c]
    assert len(ensures) == 1, ensures  # the account script ran once, not once per lease
    assert await _states(engine, placed.id) == ["placed", "provisioning", "running"]


class _Watch:
    """Reads /etc/passwd in a tight loop on a thread: (wall time, whether `user` exists)."""

    def __init__(self, user: str) -> None:
        self._entry = f"{user}:"
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            found = any(
                line.startswith(self._entry)
                for line in Path("/etc/passwd").read_text().splitlines()
            )
            self.samples.append((at, found))

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


async def test_a_stop_during_an_ensure_in_flight_leaves_no_account_after_stopped(
    uow: Uow,
    engine: AsyncEngine,
    settings: Settings,
    service_env: dict[str, str],
    where: EngineNode,
    tmp_path: Path,
) -> None:
    world = await engine_world(uow, settings, service_env, where)
    log = tmp_path / "node-commands.log"
    slow_node_commands(where.node, log, SLOW)
    placed = await create_allocation(world.kit, world.user, 1, [world.key_id], "stop", META)
    user = placed.username
    assert user is not None
    workers = _workers(worker_env(service_env, where, LEASE), tmp_path, 2)
    try:
        with _Watch(user) as watch:
            await until(lambda: calls(log, "useradd", user), "useradd in flight")
            await stop_allocation(world.kit, world.user, placed.id, META)
            await until(lambda: is_in(engine, placed.id, "stopped"), "stopped", timeout=90)
            # Watch on until well after the in-flight ensure would have ended.
            await asyncio.sleep(SLOW + 3 * LEASE)
    finally:
        for worker in workers:
            worker.stop()
    async with uow() as u:
        stopped = await u.allocations.get(placed.id)
    assert stopped is not None and stopped.ended_at is not None
    after = [found for at, found in watch.samples if at >= stopped.ended_at.timestamp()]
    assert len(after) > 100  # watched continuously, not once at the end
    assert not any(after), "an account of the stopped allocation existed after STOPPED"
    assert await _states(engine, placed.id) == ["placed", "provisioning", "stopping", "stopped"]
    # Its GPUs are free again, and no group on the node lists the user any more.
    async with engine.connect() as conn:
        held = (
            await conn.execute(
                text("SELECT count(*) FROM gpu_assignments WHERE released_at IS NULL")
            )
        ).scalar_one()
    assert held == 0
    assert user not in Path("/etc/group").read_text()
