"""GPU placement on real PostgreSQL: best-fit candidates, model prefix matching, locked fresh
reads, the partial unique index that keeps a GPU from being handed out twice, and the capacity
numbers admins and the catalog see."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import Contention
from domain.fleet.inventory import GpuInfo, canonical_model
from domain.fleet.nodes import Node, NodeAuth, NodeHealth, NodeState, NodeTrigger, transition
from domain.fleet.placement import GpuRequest, NodeCapacity, Placement
from domain.fleet.placement_services import reserve_gpus
from domain.fleet.records import NewNode
from domain.ports import UnitOfWork
from domain.retry import retrying
from infra.db.fleet_tables import gpu_assignments

Uow = Callable[[], UnitOfWork]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_hosts = iter(range(1, 10_000))


async def make_node(uow: Uow, name: str, *, driver_model: str = "NVIDIA H200", gpus: int = 8,
                    region: str = "eu-west", ready: bool = True, missing: tuple[int, ...] = (),
                    assigned: int = 0) -> Node:  # fmt: skip
    """A bootstrapped node with `gpus` GPUs (minus `missing`), `assigned` of them (the lowest
    indices) handed out already; ready, or left bootstrapping."""
    async with uow() as tx:
        host = next(_hosts)
        node = await tx.nodes.add(NewNode(
            name=name, host=f"10.1.{host // 250}.{host % 250}", port=22, ssh_user="ubuntu",
            auth=NodeAuth.CA, credential_secret_id=None, host_key=None, region=region, labels={},
            next_probe_at=NOW))  # fmt: skip
        await tx.nodes.record_gpus(node.id, [
            GpuInfo(index=i, uuid=f"GPU-{name}-{i}", model=driver_model, pci_bus_id=f"{i:02x}",
                    memory_mib=81559, driver_version="550.54.15", mig_enabled=False)
            for i in range(gpus) if i not in missing
        ])  # fmt: skip
        if ready:
            node = await tx.nodes.save(transition(replace(
                node, gpu_model=canonical_model(driver_model), gpu_count=gpus - len(missing),
                health=NodeHealth.OK, bootstrapped_at=NOW), NodeTrigger.BOOTSTRAPPED, NOW))  # fmt: skip
        if assigned:
            await tx.placements.assign(node.id, range(assigned), f"seed-{name}")
        await tx.commit()
    return node


async def candidates(uow: Uow, model: str, count: int, limit: int = 10,
                     region: str = "eu-west") -> list[NodeCapacity]:  # fmt: skip
    async with uow() as tx:
        return list(await tx.placements.candidates(GpuRequest(model, count, region), limit))


async def active_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        stmt = select(func.count()).where(gpu_assignments.c.released_at.is_(None))
        return int((await conn.execute(stmt)).scalar_one())


async def test_candidates_are_ready_matching_nodes_tightest_fit_first(uow: Uow) -> None:
    whole = await make_node(uow, "whole")
    two_left = await make_node(uow, "two-left", assigned=6)
    four_left = await make_node(uow, "four-left", assigned=4)
    holey = await make_node(uow, "holey", missing=(0, 1, 2), assigned=0)  # 5 present
    await make_node(uow, "elsewhere", region="us-east")
    await make_node(uow, "not-ready", ready=False)
    await make_node(uow, "h100", driver_model="NVIDIA H100 80GB HBM3")

    found = await candidates(uow, "H200", 2)
    assert [c.node_id for c in found] == [two_left.id, four_left.id, holey.id, whole.id]
    assert found[0] == NodeCapacity(two_left.id, "eu-west", "H200", frozenset({6, 7}))
    assert found[1].free == frozenset({4, 5, 6, 7})
    assert found[2].free == frozenset({3, 4, 5, 6, 7})  # the missing GPUs are not offered
    assert [c.node_id for c in await candidates(uow, "H200", 5)] == [holey.id, whole.id]
    assert [c.node_id for c in await candidates(uow, "H200", 8)] == [whole.id]
    assert await candidates(uow, "H200", 9) == []
    assert [c.node_id for c in await candidates(uow, "H200", 1, limit=2)] == [
        two_left.id, four_left.id]  # fmt: skip


async def test_a_sku_model_matches_node_models_it_prefixes_by_word(uow: Uow) -> None:
    hbm3 = await make_node(uow, "hbm3", driver_model="NVIDIA H100 80GB HBM3")
    sxm = await make_node(uow, "sxm", driver_model="NVIDIA H100-SXM5-80GB", assigned=1)
    plain = await make_node(uow, "plain", driver_model="NVIDIA H100", assigned=2)
    await make_node(uow, "h1000", driver_model="NVIDIA H1000")
    await make_node(uow, "h100x", driver_model="NVIDIA H100X")

    found = await candidates(uow, "H100", 1)
    assert [c.node_id for c in found] == [plain.id, sxm.id, hbm3.id]
    assert {c.gpu_model for c in found} == {"H100"}  # named as asked, so `place` takes them
    assert [c.node_id for c in await candidates(uow, "h100 80gb hbm3", 1)] == [hbm3.id]
    assert [c.node_id for c in await candidates(uow, "H100-SXM5", 1)] == [sxm.id]
    assert await candidates(uow, "H10", 1) == []


async def test_the_index_refuses_a_second_active_assignment_of_a_gpu(uow, engine) -> None:
    node = await make_node(uow, "n1")
    async with uow() as tx:
        given = await tx.placements.assign(node.id, [1, 0], "alloc-a")
        await tx.commit()
    assert [(a.gpu_index, a.holder, a.released_at) for a in given] == [
        (0, "alloc-a", None), (1, "alloc-a", None)]  # fmt: skip
    with pytest.raises(Contention):
        async with uow() as tx:
            await tx.placements.assign(node.id, [1, 2], "alloc-b")  # GPU 1 is taken
    assert await active_rows(engine) == 2  # GPU 2 was not kept either
    with pytest.raises(IntegrityError, match="uq_gpu_assignments_active"):
        async with engine.begin() as conn:  # straight past the repository
            await conn.execute(insert(gpu_assignments).values(node_id=node.id, gpu_index=0,
                                                              holder="sneaky"))  # fmt: skip
    with pytest.raises(IntegrityError, match="fk_gpu_assignments_gpu"):
        async with uow() as tx:  # a GPU the node never reported
            await tx.placements.assign(node.id, [8], "alloc-c")
    async with uow() as tx:
        assert [a.gpu_index for a in await tx.placements.held_by("alloc-a")] == [0, 1]
        assert await tx.placements.held_by("alloc-b") == []
        assert await tx.placements.active_on(node.id) == 2


async def test_concurrent_assignments_of_one_gpu_one_wins(uow, engine) -> None:
    node = await make_node(uow, "n1")
    async with uow() as first:
        await first.placements.assign(node.id, [0], "first")

        async def second() -> None:
            async with uow() as tx:
                await tx.placements.assign(node.id, [0], "second")
                await tx.commit()

        racing = asyncio.create_task(second())
        await asyncio.sleep(0.2)
        assert not racing.done()  # waits to learn whether the first commits
        await first.commit()
    with pytest.raises(Contention):
        await racing
    async with uow() as tx:
        assert [a.holder for a in await tx.placements.held_by("first")] == ["first"]
        assert await tx.placements.held_by("second") == []


async def test_release_frees_the_gpus_for_the_next_holder(uow, engine) -> None:
    node = await make_node(uow, "n1", gpus=2)
    async with uow() as tx:
        await tx.placements.assign(node.id, [0, 1], "alloc-a")
        await tx.commit()
    assert await candidates(uow, "H200", 1) == []
    async with uow() as tx:
        assert await tx.placements.release("alloc-a") == 2
        assert await tx.placements.release("alloc-a") == 0  # releasing twice is harmless
        await tx.commit()
    async with uow() as tx:
        assert await tx.placements.active_on(node.id) == 0
        assert await tx.placements.held_by("alloc-a") == []
    assert [c.free for c in await candidates(uow, "H200", 2)] == [frozenset({0, 1})]
    async with uow() as tx:
        again = await tx.placements.assign(node.id, [1], "alloc-b")
        await tx.commit()
    assert [(a.gpu_index, a.holder) for a in again] == [(1, "alloc-b")]
    async with engine.connect() as conn:
        history = (await conn.execute(select(gpu_assignments.c.holder, gpu_assignments.c.released_at)
                                      .order_by(gpu_assignments.c.id))).all()  # fmt: skip
    assert [(h, r is not None) for h, r in history] == [
        ("alloc-a", True), ("alloc-a", True), ("alloc-b", False)]  # fmt: skip


async def test_lock_node_waits_for_the_holder_and_then_reads_afresh(uow: Uow) -> None:
    node = await make_node(uow, "n1")
    cordoned = await make_node(uow, "n2")
    async with uow() as tx:
        await tx.nodes.save(transition(cordoned, NodeTrigger.CORDON, NOW))
        await tx.commit()
    async with uow() as first:
        locked = await first.placements.lock_node(node.id)
        assert locked == NodeCapacity(node.id, "eu-west", "H200", frozenset(range(8)))
        await first.placements.assign(node.id, [0, 1, 2], "first")

        async def second() -> NodeCapacity | None:
            async with uow() as tx:
                return await tx.placements.lock_node(node.id)

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.2)
        assert not waiting.done()  # the node row is locked
        await first.commit()
    fresh = await waiting
    # It waited, then saw the assignments committed meanwhile.
    assert fresh is not None and fresh.free == frozenset(range(3, 8))
    async with uow() as tx:
        assert await tx.placements.lock_node(cordoned.id) is None


async def test_concurrent_reservations_never_share_a_gpu(uow, engine) -> None:
    for i in range(3):
        await make_node(uow, f"n{i}", gpus=4)

    async def reserve(holder: str) -> Placement | None:
        async with uow() as tx:
            placed = await reserve_gpus(tx, GpuRequest("H200", 2, "eu-west"), holder)
            await tx.commit()
        return placed if isinstance(placed, Placement) else None

    # As callers do: a transaction the database aborted (a deadlock between two that each
    # found their first node full) runs again.
    results = await asyncio.gather(*(retrying(lambda h=f"alloc-{i}": reserve(h)) for i in range(8)))
    placed = [p for p in results if p is not None]
    assert len(placed) == 6  # 12 GPUs, 2 each
    gpus = [(p.node_id, i) for p in placed for i in p.gpu_indices]
    assert len(set(gpus)) == 12
    assert await active_rows(engine) == 12


async def test_capacity_counts_present_gpus_and_assignments_per_live_node(uow, engine) -> None:
    await make_node(uow, "b-ready", assigned=3)
    await make_node(uow, "a-ready", missing=(7,), assigned=1)
    held = await make_node(uow, "c-held", assigned=2)
    await make_node(uow, "fresh", ready=False, gpus=0)
    gone = await make_node(uow, "gone", region="us-east")
    await make_node(uow, "west", region="us-west", driver_model="NVIDIA H100 80GB HBM3", gpus=4)
    async with uow() as tx:
        await tx.nodes.save(transition(held, NodeTrigger.DRAIN, NOW))
        await tx.nodes.save(transition(gone, NodeTrigger.RETIRE, NOW))
        await tx.commit()
    async with uow() as tx:
        rows = await tx.placements.capacity()
    assert [(r.node_name, r.region, r.state, r.gpu_model, r.total, r.allocated) for r in rows] == [
        ("a-ready", "eu-west", NodeState.READY, "H200", 7, 1),
        ("b-ready", "eu-west", NodeState.READY, "H200", 8, 3),
        ("c-held", "eu-west", NodeState.DRAINING, "H200", 8, 2),
        ("fresh", "eu-west", NodeState.BOOTSTRAPPING, "", 0, 0),
        ("west", "us-west", NodeState.READY, "H100 80GB HBM3", 4, 0),
    ]  # fmt: skip
    assert [(r.free, r.cordoned) for r in rows] == [(6, 0), (5, 0), (0, 6), (0, 0), (4, 0)]


async def test_available_sums_whole_placements_per_sku(uow: Uow) -> None:
    await make_node(uow, "a")  # 8 free
    await make_node(uow, "b", assigned=5)  # 3 free
    await make_node(uow, "c", missing=(0,))  # 7 free
    held = await make_node(uow, "held")
    await make_node(uow, "h100", driver_model="NVIDIA H100 80GB HBM3", assigned=2)  # 6 free
    await make_node(uow, "east", region="us-east", gpus=2)
    async with uow() as tx:
        await tx.nodes.save(transition(held, NodeTrigger.CORDON, NOW))  # offers nothing
        await tx.commit()
    async with uow() as tx:
        counts = await tx.placements.available([
            (1, "H200", "eu-west", 1), (2, "H200", "eu-west", 4), (3, "H200", "eu-west", 8),
            (4, "h100", "eu-west", 2), (5, "H200", "us-east", 1), (6, "H200", "ap-south", 1),
            (7, "H100 80GB", "eu-west", 1), (8, "H100 80GB HBM3", "us-east", 1),
        ])  # fmt: skip
        assert await tx.placements.available([]) == {}
    assert counts == {1: 18, 2: 2 + 0 + 1, 3: 1, 4: 3, 5: 2, 6: 0, 7: 6, 8: 0}
