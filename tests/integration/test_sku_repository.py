"""The catalog on real PostgreSQL: keyset pages, filters, uniqueness, constraints, transactions."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.catalog import services
from domain.catalog.sku import SkuFilter, SkuSpec, SkuStatus
from domain.errors import Conflict
from domain.pagination import PageRequest
from infra.db.tables import outbox, skus
from tests.support.catalog import make_spec


def spec(name: str, gpu_model: str = "H200", region: str = "eu-west") -> SkuSpec:
    return make_spec(name, gpu_model=gpu_model, region=region, currency="usd")


async def _count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_keyset_pages_cover_every_row_once(uow, engine) -> None:
    for i in range(25):
        await services.add_sku(
            uow(), spec(f"sku-{i:02d}", region="us-east" if i % 2 else "eu-west")
        )
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await services.list_skus(uow(), SkuFilter(), PageRequest(10, after))
        seen += [sku.name for _, sku in page.items]
        pages += 1
        if not page.has_next_page:
            break
        after = page.items[-1][0]
    assert seen == [f"sku-{i:02d}" for i in range(25)]
    assert pages == 3


async def test_filters_by_gpu_model_region_and_status(uow, engine) -> None:
    await services.add_sku(uow(), spec("a", gpu_model="H100", region="us-east"))
    b = await services.add_sku(uow(), spec("b", gpu_model="H200", region="us-east"))
    await services.add_sku(uow(), spec("c", gpu_model="H200", region="eu-west"))
    await services.retire_sku(uow(), b.id)

    def names(page) -> list[str]:  # type: ignore[no-untyped-def]
        return [sku.name for _, sku in page.items]

    first = PageRequest(50, None)
    assert names(await services.list_skus(uow(), SkuFilter(gpu_model="h200"), first)) == ["c"]
    assert names(await services.list_skus(uow(), SkuFilter(region="us-east"), first)) == ["a"]
    everything = SkuFilter(status=None)
    assert names(await services.list_skus(uow(), everything, first)) == ["a", "b", "c"]
    retired = await services.list_skus(uow(), SkuFilter(status=SkuStatus.RETIRED), first)
    assert names(retired) == ["b"]
    assert retired.items[0][1].retired_at is not None


async def test_name_unique_case_insensitively_and_nothing_written(uow, engine) -> None:
    await services.add_sku(uow(), spec("H200x1"))
    with pytest.raises(Conflict) as caught:
        await services.add_sku(uow(), spec("h200X1"))
    assert caught.value.problems[0].code == "NAME_TAKEN"
    assert await _count(engine, skus) == 1
    assert await _count(engine, outbox) == 1  # only the first add announced itself


async def test_concurrent_adds_of_one_name_leave_one_row(uow, engine) -> None:
    results = await asyncio.gather(
        *(services.add_sku(uow(), spec("race")) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    assert await _count(engine, skus) == 1


async def test_database_constraints_refuse_bad_rows_even_past_the_domain(engine) -> None:
    row = {"name": "raw", "gpu_model": "H200", "gpu_count": 1, "vcpus": 1, "ram_gib": 1,
           "disk_gib": 1, "region": "eu-west", "hourly_price_minor": 1, "currency": "USD"}  # fmt: skip
    for bad in ({"hourly_price_minor": -1}, {"gpu_count": 0}, {"currency": "usd"}, {"status": "x"}):
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert(skus).values(**{**row, **bad}))
    assert await _count(engine, skus) == 0


async def test_rolled_back_change_leaves_no_outbox_row(uow, engine) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with uow() as tx:
            await tx.skus.add(spec("ghost"))
            raise Boom
    assert await _count(engine, skus) == 0
    assert await _count(engine, outbox) == 0


async def test_change_and_its_outbox_row_commit_together(uow, engine) -> None:
    sku = await services.add_sku(uow(), spec("real"))
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox))).all()
    assert [(r.topic, r.name, r.payload) for r in rows] == [
        ("catalog", "sku.added", {"kind": "added", "skuId": sku.id})
    ]
    assert rows[0].published_at is None


async def test_connection_lost_mid_transaction_is_service_unavailable(uow, engine) -> None:
    from sqlalchemy import text

    from domain.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable) as caught:
        async with uow() as tx:
            await tx.skus.add(spec("never-committed"))
            pid = (await tx._conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await tx.skus.count()
    assert caught.value.problems[0].code == "SERVICE_UNAVAILABLE"
    assert await _count(engine, skus) == 0
    await services.add_sku(uow(), spec("after"))  # the pool recovered by itself
    assert await _count(engine, skus) == 1
