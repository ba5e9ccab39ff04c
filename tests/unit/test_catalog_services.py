"""Catalog use cases against the in-memory unit of work."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.catalog import services
from domain.catalog.sku import SkuErrorCode, SkuFilter, SkuStatus
from domain.errors import Conflict, NotFound
from domain.events import DomainEvent
from domain.pagination import PageRequest
from domain.ports import UnitOfWork
from tests.support.catalog import make_spec
from tests.unit.fakes import FakeDatabase, FakeUnitOfWork


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def uow(db: FakeDatabase) -> FakeUnitOfWork:
    return FakeUnitOfWork(db)


async def test_fake_repository_honours_the_name_contract(db: FakeDatabase) -> None:
    uow: UnitOfWork = FakeUnitOfWork(db)  # type-checked against the port
    async with uow:
        await uow.skus.add(make_spec("h100x1"))
        with pytest.raises(Conflict) as caught:
            await uow.skus.add(make_spec("H100X1"))
        assert caught.value.problems[0].code == SkuErrorCode.NAME_TAKEN
        assert await uow.skus.count() == 1


async def test_add_sku_stores_records_and_commits(uow: FakeUnitOfWork, db: FakeDatabase) -> None:
    sku = await services.add_sku(uow, make_spec())
    assert sku.name == "h100x1"
    assert sku.status is SkuStatus.ACTIVE
    assert sku.retired_at is None
    assert db.skus == {sku.id: sku}
    assert uow.commits == 1
    assert db.outbox == [
        DomainEvent(topic="catalog", name="sku.added", payload={"kind": "added", "skuId": sku.id})
    ]


@pytest.mark.parametrize("duplicate", ["h100x1", "H100X1", "H100x1"])
async def test_duplicate_name_is_a_conflict_and_writes_nothing(
    db: FakeDatabase, duplicate: str
) -> None:
    first = await services.add_sku(FakeUnitOfWork(db), make_spec("h100x1"))
    uow = FakeUnitOfWork(db)
    with pytest.raises(Conflict) as caught:
        await services.add_sku(uow, make_spec(duplicate, gpu_count=2))
    assert [(p.code, p.field) for p in caught.value.problems] == [(SkuErrorCode.NAME_TAKEN, "name")]
    assert uow.commits == 0
    assert uow.pending_events == []
    assert db.skus == {first.id: first}
    assert len(db.outbox) == 1


async def test_retire_sku(db: FakeDatabase) -> None:
    sku = await services.add_sku(FakeUnitOfWork(db), make_spec())
    uow = FakeUnitOfWork(db)
    retired = await services.retire_sku(uow, sku.id)
    assert retired.id == sku.id
    assert retired.status is SkuStatus.RETIRED
    assert retired.retired_at is not None
    assert db.skus[sku.id] == retired
    assert uow.commits == 1
    assert db.outbox[-1] == DomainEvent(
        "catalog", "sku.retired", {"kind": "retired", "skuId": sku.id}
    )


async def test_retire_unknown_is_not_found(uow: FakeUnitOfWork, db: FakeDatabase) -> None:
    with pytest.raises(NotFound) as caught:
        await services.retire_sku(uow, 999)
    assert [(p.code, p.field) for p in caught.value.problems] == [(SkuErrorCode.NOT_FOUND, "id")]
    assert uow.commits == 0
    assert db.outbox == []


async def test_retire_twice_is_a_conflict(db: FakeDatabase) -> None:
    sku = await services.add_sku(FakeUnitOfWork(db), make_spec())
    await services.retire_sku(FakeUnitOfWork(db), sku.id)
    uow = FakeUnitOfWork(db)
    with pytest.raises(Conflict) as caught:
        await services.retire_sku(uow, sku.id)
    assert [(p.code, p.field) for p in caught.value.problems] == [
        (SkuErrorCode.ALREADY_RETIRED, "id")
    ]
    assert uow.commits == 0
    assert [e.name for e in db.outbox] == ["sku.added", "sku.retired"]


async def test_get_sku(db: FakeDatabase) -> None:
    sku = await services.add_sku(FakeUnitOfWork(db), make_spec())
    assert await services.get_sku(FakeUnitOfWork(db), sku.id) == sku
    assert await services.get_sku(FakeUnitOfWork(db), sku.id + 1) is None


async def test_seed_adds_demo_skus_once(db: FakeDatabase) -> None:
    uow = FakeUnitOfWork(db)
    added = await services.seed_demo_skus(uow)
    assert [s.name for s in added] == [raw["name"] for raw in services.DEMO_SKUS]
    assert uow.commits == 1
    assert len(db.skus) == len(services.DEMO_SKUS)
    assert [e.payload for e in db.outbox] == [{"kind": "added", "skuId": s.id} for s in added]

    again = FakeUnitOfWork(db)
    assert await services.seed_demo_skus(again) == []
    assert again.commits == 0
    assert len(db.skus) == len(services.DEMO_SKUS)
    assert len(db.outbox) == len(services.DEMO_SKUS)


async def test_seed_does_nothing_when_catalog_has_any_sku(db: FakeDatabase) -> None:
    await services.add_sku(FakeUnitOfWork(db), make_spec("mine"))
    assert await services.seed_demo_skus(FakeUnitOfWork(db)) == []
    assert [s.name for s in db.skus.values()] == ["mine"]


async def _add_many(db: FakeDatabase, count: int) -> list[int]:
    return [
        (await services.add_sku(FakeUnitOfWork(db), make_spec(f"sku{i}"))).id for i in range(count)
    ]


async def test_list_pages_by_id(db: FakeDatabase) -> None:
    ids = await _add_many(db, 5)
    first = await services.list_skus(FakeUnitOfWork(db), SkuFilter(), PageRequest(2, None))
    assert [k for k, _ in first.items] == ids[:2]
    assert (first.has_next_page, first.has_previous_page) == (True, False)

    second = await services.list_skus(FakeUnitOfWork(db), SkuFilter(), PageRequest(2, ids[1]))
    assert [k for k, _ in second.items] == ids[2:4]
    assert (second.has_next_page, second.has_previous_page) == (True, True)

    last = await services.list_skus(FakeUnitOfWork(db), SkuFilter(), PageRequest(2, ids[3]))
    assert [k for k, _ in last.items] == ids[4:]
    assert (last.has_next_page, last.has_previous_page) == (False, True)


async def test_list_exact_fit_has_no_next_page(db: FakeDatabase) -> None:
    await _add_many(db, 3)
    page = await services.list_skus(FakeUnitOfWork(db), SkuFilter(), PageRequest(3, None))
    assert len(page.items) == 3
    assert page.has_next_page is False


async def test_list_filters(db: FakeDatabase) -> None:
    a = await services.add_sku(FakeUnitOfWork(db), make_spec("a", gpu_model="a100"))
    h = await services.add_sku(FakeUnitOfWork(db), make_spec("h", region="eu-west"))
    gone = await services.add_sku(FakeUnitOfWork(db), make_spec("gone"))
    await services.retire_sku(FakeUnitOfWork(db), gone.id)

    async def names(sku_filter: SkuFilter) -> list[str]:
        page = await services.list_skus(FakeUnitOfWork(db), sku_filter, PageRequest(10, None))
        return [s.name for _, s in page.items]

    assert await names(SkuFilter()) == [a.name, h.name]  # active only by default
    assert await names(SkuFilter(status=None)) == ["a", "h", "gone"]
    assert await names(SkuFilter(status=SkuStatus.RETIRED)) == ["gone"]
    assert await names(SkuFilter(gpu_model=" a100 ")) == ["a"]
    assert await names(SkuFilter(region="eu-west")) == ["h"]


async def test_uow_rolls_back_uncommitted_work(db: FakeDatabase) -> None:
    uow = FakeUnitOfWork(db)
    async with uow:
        await uow.skus.add(make_spec())
        uow.record(DomainEvent("catalog", "sku.added", {}))
    assert uow.rollbacks == 1
    assert db.skus == {}
    assert db.outbox == []


async def test_uow_rolls_back_when_the_block_raises(db: FakeDatabase) -> None:
    uow = FakeUnitOfWork(db)
    with pytest.raises(RuntimeError):
        async with uow:
            await uow.skus.add(make_spec())
            raise RuntimeError("boom")
    assert db.skus == {}
    assert uow.rollbacks == 1


@settings(max_examples=50, deadline=None)
@given(count=st.integers(min_value=0, max_value=12), size=st.integers(min_value=1, max_value=5))
def test_walking_every_page_yields_each_sku_once_in_order(count: int, size: int) -> None:
    async def walk() -> tuple[list[int], list[int]]:
        db = FakeDatabase()
        ids = await _add_many(db, count)
        seen: list[int] = []
        after: int | None = None
        while True:
            page = await services.list_skus(
                FakeUnitOfWork(db), SkuFilter(), PageRequest(size, after)
            )
            assert len(page.items) <= size
            assert page.has_previous_page == (after is not None)
            seen.extend(k for k, _ in page.items)
            if not page.has_next_page:
                return ids, seen
            after = page.items[-1][0]

    ids, seen = asyncio.run(walk())
    assert seen == ids


async def test_catalog_changes_are_audited_with_their_actor(db: FakeDatabase) -> None:
    from domain.audit.records import RequestMeta
    from domain.identity.principal import Principal
    from domain.identity.scopes import Role

    admin = Principal.for_session(5, Role.ADMIN, 9, datetime.now(UTC))
    meta = RequestMeta(request_id="r1", client_ip="10.1.1.1")
    sku = await services.add_sku(FakeUnitOfWork(db), make_spec(), admin, meta)
    await services.retire_sku(FakeUnitOfWork(db), sku.id, admin, meta)
    assert [(r.action, r.actor_user_id, r.target_id, r.request_id) for r in db.audit] == [
        ("catalog.sku.added", 5, str(sku.id), "r1"),
        ("catalog.sku.retired", 5, str(sku.id), "r1"),
    ]
    assert db.audit[1].before == {"status": "active"}
    assert db.audit[1].after == {"status": "retired"}
    # A refused change writes no audit row: it shares the transaction that was not committed.
    with pytest.raises(Conflict):
        await services.retire_sku(FakeUnitOfWork(db), sku.id, admin, meta)
    assert len(db.audit) == 2
