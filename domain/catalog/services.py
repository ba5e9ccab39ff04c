"""Catalog use cases. Each takes a unit of work and decides; the adapters only store."""

from __future__ import annotations

from collections.abc import Sequence

from domain.audit.records import CLI, RequestMeta, audit
from domain.catalog.sku import (
    Sku,
    SkuChanges,
    SkuErrorCode,
    SkuFilter,
    SkuSpec,
    SkuStatus,
    updatable,
)
from domain.errors import Conflict, NotFound, Problem
from domain.events import DomainEvent
from domain.identity.principal import SYSTEM, Principal
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork

CATALOG_TOPIC = "catalog"


def _changed(kind: str, sku: Sku) -> DomainEvent:
    return DomainEvent(
        topic=CATALOG_TOPIC, name=f"sku.{kind}", payload={"kind": kind, "skuId": sku.id}
    )


def _view(sku: Sku) -> dict[str, object]:
    return {"name": sku.name, "gpuModel": sku.gpu_model, "gpuCount": sku.gpu_count,
            "region": sku.region, "hourlyPriceMinor": sku.hourly_price.amount_minor,
            "currency": sku.hourly_price.currency, "status": str(sku.status)}  # fmt: skip


async def add_sku(
    uow: UnitOfWork, spec: SkuSpec, actor: Principal = SYSTEM, meta: RequestMeta = CLI
) -> Sku:
    async with uow:
        sku = await uow.skus.add(spec)  # the unique index decides a clash, races included
        uow.record(_changed("added", sku))
        await uow.audit.append(audit(actor, meta, "catalog.sku.added", ("sku", sku.id),
                                     after=_view(sku)))  # fmt: skip
        await uow.commit()
        return sku


def _not_found(sku_id: int) -> NotFound:
    return NotFound(Problem(SkuErrorCode.NOT_FOUND, f"No SKU with id {sku_id}.", "id"))


def _already_retired(sku: Sku) -> Conflict:
    return Conflict(
        Problem(SkuErrorCode.ALREADY_RETIRED, f"SKU {sku.name} is already retired.", "id")
    )


async def update_sku(
    uow: UnitOfWork, sku_id: int, changes: SkuChanges, actor: Principal = SYSTEM,
    meta: RequestMeta = CLI,
) -> Sku:  # fmt: skip
    """Change the name, price, CPUs, memory or disk of an active SKU. The row is locked, so a
    concurrent retire or update is applied before or after this one, never in between; values
    equal to the current ones are no change, and no change at all writes nothing."""
    async with uow:
        sku = await uow.skus.get(sku_id, for_update=True)
        if sku is None:
            raise _not_found(sku_id)
        if sku.status is SkuStatus.RETIRED:
            raise _already_retired(sku)
        wanted = changes.against(sku)
        after = wanted.fields()
        if not after:
            return sku
        updated = await uow.skus.update(sku_id, wanted)  # NAME_TAKEN on a clash, races included
        before = updatable(sku)
        uow.record(_changed("updated", updated))
        await uow.audit.append(audit(actor, meta, "catalog.sku.updated", ("sku", sku_id),
                                     before={key: before[key] for key in after},
                                     after=after))  # fmt: skip
        await uow.commit()
        return updated


async def available(uow: UnitOfWork, skus: Sequence[Sku]) -> dict[int, int]:
    """How many more of each SKU could be placed now: whole SKUs' worth of free GPUs on ready
    nodes of its region and model. A retired SKU cannot be ordered: 0."""
    active = [(s.id, s.gpu_model, s.region, s.gpu_count) for s in skus
              if s.status is SkuStatus.ACTIVE]  # fmt: skip
    found: dict[int, int] = {}
    if active:
        async with uow:
            found = dict(await uow.placements.available(active))
    return {s.id: found.get(s.id, 0) for s in skus}


async def retire_sku(
    uow: UnitOfWork, sku_id: int, actor: Principal = SYSTEM, meta: RequestMeta = CLI
) -> Sku:
    async with uow:
        sku = await uow.skus.get(sku_id, for_update=True)
        if sku is None:
            raise _not_found(sku_id)
        if sku.status is SkuStatus.RETIRED:
            raise _already_retired(sku)
        retired = await uow.skus.set_status(sku_id, SkuStatus.RETIRED)
        uow.record(_changed("retired", retired))
        await uow.audit.append(audit(actor, meta, "catalog.sku.retired", ("sku", sku_id),
                                     before={"status": str(sku.status)},
                                     after={"status": str(retired.status)}))  # fmt: skip
        await uow.commit()
        return retired


async def get_sku(uow: UnitOfWork, sku_id: int) -> Sku | None:
    async with uow:
        return await uow.skus.get(sku_id)


async def get_sku_by_name(uow: UnitOfWork, name: str) -> Sku | None:
    async with uow:
        return await uow.skus.get_by_name(name)


async def list_skus(uow: UnitOfWork, sku_filter: SkuFilter, page: PageRequest) -> Page[Sku]:
    async with uow:
        return await uow.skus.list(sku_filter, page)


DEMO_SKUS: tuple[dict[str, object], ...] = (
    {"name": "h200x1", "gpu_model": "H200", "gpu_count": 1, "vcpus": 24, "ram_gib": 240,
     "disk_gib": 2000, "region": "eu-west", "hourly_price_minor": 399, "currency": "USD"},
    {"name": "h200x8", "gpu_model": "H200", "gpu_count": 8, "vcpus": 192, "ram_gib": 1920,
     "disk_gib": 16000, "region": "eu-west", "hourly_price_minor": 3192, "currency": "USD"},
    {"name": "h100x1", "gpu_model": "H100", "gpu_count": 1, "vcpus": 16, "ram_gib": 180,
     "disk_gib": 1000, "region": "us-east", "hourly_price_minor": 249, "currency": "USD"},
    {"name": "a100x2", "gpu_model": "A100", "gpu_count": 2, "vcpus": 24, "ram_gib": 240,
     "disk_gib": 1000, "region": "us-east", "hourly_price_minor": 258, "currency": "USD"},
)  # fmt: skip


async def seed_demo_skus(uow: UnitOfWork) -> list[Sku]:
    """Add the demo SKUs when the catalog is empty, so a fresh `make run` has something to show."""
    async with uow:
        if await uow.skus.count() > 0:
            return []
        added = []
        for raw in DEMO_SKUS:
            sku = await uow.skus.add(SkuSpec.create(**raw))  # type: ignore[arg-type]
            uow.record(_changed("added", sku))
            await uow.audit.append(audit(SYSTEM, CLI, "catalog.sku.added", ("sku", sku.id),
                                         after=_view(sku)))  # fmt: skip
            added.append(sku)
        await uow.commit()
        return added
