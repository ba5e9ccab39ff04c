"""Placement against real PostgreSQL: many requests at once never share a GPU, and exactly as
many succeed as there are GPUs; the others get a clear "no capacity"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.fleet.nodes import NodeState
from domain.fleet.placement import GpuRequest, NoCapacity, Placement
from domain.fleet.placement_services import release_gpus, reserve_gpus
from domain.retry import retrying
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from tests.support.fleet import h200s, seed_node

ONE = GpuRequest("H200", 1, "eu-west")


@pytest.fixture
async def wide(engine: AsyncEngine, database_url: str) -> AsyncIterator[AsyncEngine]:
    """Enough connections for every request to hold one at once (the `engine` fixture has
    cleared the tables first)."""
    eng = make_engine(database_url, pool_size=30)
    try:
        yield eng
    finally:
        await eng.dispose()


async def _reserve(engine: AsyncEngine, request: GpuRequest, holder: str) -> Placement | NoCapacity:
    async def attempt() -> Placement | NoCapacity:
        uow = SqlUnitOfWork(engine)
        async with uow:
            result = await reserve_gpus(uow, request, holder)
            await uow.commit()
            return result

    return await retrying(attempt)


async def test_fifty_simultaneous_placements_on_ten_free_gpus(wide: AsyncEngine) -> None:
    for name, gpus in (("a", 4), ("b", 4), ("c", 2)):
        await seed_node(SqlUnitOfWork(wide), name, gpus=gpus)
    # Not offered: a cordoned node, and one in another region.
    await seed_node(SqlUnitOfWork(wide), "held", gpus=8, state=NodeState.CORDONED)
    await seed_node(SqlUnitOfWork(wide), "far", gpus=8, region="us-east")

    results = await asyncio.gather(*(_reserve(wide, ONE, f"test:{i}") for i in range(50)))

    placed = [r for r in results if isinstance(r, Placement)]
    refused = [r for r in results if isinstance(r, NoCapacity)]
    assert (len(placed), len(refused)) == (10, 40)
    gpus = [(p.node_id, i) for p in placed for i in p.gpu_indices]
    assert len(set(gpus)) == 10  # no GPU twice
    async with wide.connect() as conn:
        active = (await conn.execute(text(
            "SELECT count(*) FROM gpu_assignments WHERE released_at IS NULL"))).scalar_one()  # fmt: skip
        nodes = set((await conn.execute(text(
            "SELECT name FROM nodes n JOIN gpu_assignments a ON a.node_id = n.id"))).scalars())  # fmt: skip
        free = {
            r.name: r.gpus_free
            for r in await conn.execute(text("SELECT name, gpus_free FROM nodes"))
        }
    assert active == 10 and nodes == {"a", "b", "c"}
    # The trigger-kept count placement searches by agrees with the assignments.
    assert free == {"a": 0, "b": 0, "c": 0, "held": 8, "far": 8}


async def test_mixed_sizes_at_once_never_overlap_and_fill_fuller_nodes_first(
    wide: AsyncEngine,
) -> None:
    for name in ("n1", "n2", "n3"):
        await seed_node(SqlUnitOfWork(wide), name, gpus=8)
    requests = [GpuRequest("H200", count, "eu-west") for count in [1, 2, 4, 8, 3] * 4]
    results = await asyncio.gather(*(_reserve(wide, r, f"mix:{i}")
                                     for i, r in enumerate(requests)))  # fmt: skip
    placed = [(req, r) for req, r in zip(requests, results, strict=True)
              if isinstance(r, Placement)]  # fmt: skip
    gpus = [(p.node_id, i) for _, p in placed for i in p.gpu_indices]
    assert len(gpus) == len(set(gpus)) <= 24
    assert all(len(p.gpu_indices) == req.gpu_count for req, p in placed)
    assert sum(req.gpu_count for req, _ in placed) == len(gpus)


async def test_released_gpus_are_placed_again(wide: AsyncEngine) -> None:
    await seed_node(SqlUnitOfWork(wide), "solo", gpus=2)
    first = await _reserve(wide, GpuRequest("H200", 2, "eu-west"), "alloc:1")
    assert isinstance(first, Placement)
    full = await _reserve(wide, ONE, "alloc:2")
    assert isinstance(full, NoCapacity)
    uow = SqlUnitOfWork(wide)
    async with uow:
        assert await release_gpus(uow, "alloc:1") == 2
        await uow.commit()
    again = await _reserve(wide, ONE, "alloc:2")
    assert isinstance(again, Placement) and again.gpu_indices == (0,)
    async with wide.connect() as conn:
        assert (await conn.execute(text("SELECT gpus_free FROM nodes"))).scalar_one() == 1


async def test_a_gpu_gone_from_the_inventory_is_no_longer_free(wide: AsyncEngine) -> None:
    node = await seed_node(SqlUnitOfWork(wide), "shrunk", gpus=4)
    uow = SqlUnitOfWork(wide)
    async with uow:
        await uow.nodes.record_gpus(node.id, h200s(4, "shrunk")[:3])
        await uow.commit()
    full = await _reserve(wide, GpuRequest("H200", 4, "eu-west"), "alloc:4")
    assert isinstance(full, NoCapacity) and full.largest_free == 3
