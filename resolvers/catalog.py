"""Catalog resolvers: `skus`, `sku(id)`, the admins' SKU mutations and the `catalogChanged`
subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from typing import Any

import strawberry
from strawberry import Info

from domain.catalog import services
from domain.catalog.sku import SkuChanges, SkuSpec
from domain.catalog.sku import SkuFilter as DomainSkuFilter
from domain.catalog.sku import SkuStatus as DomainSkuStatus
from domain.errors import DomainError
from domain.pagination import PageRequest
from resolvers.access import fetch_node
from schema.catalog import (
    CatalogChange,
    CreateSkuInput,
    Sku,
    SkuConnection,
    SkuFilter,
    SkuPayload,
    UpdateSkuInput,
)
from schema.context import AppContext, SharedReads
from schema.errors import SkuError, SkuProblem, typed_error
from schema.relay import After, Before, First, Last, expect_global_id
from schema.sent_ids import quoting

# Enough to absorb the duplicates an at-least-once relay can produce after a restart.


async def skus(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
    filter: SkuFilter | None = None,  # noqa: A002 - the GraphQL argument is called filter
) -> SkuConnection:
    page = PageRequest.parse(first, after, last, before)
    wanted = filter or SkuFilter()
    domain_filter = DomainSkuFilter(
        gpu_model=wanted.gpu_model,
        region=wanted.region,
        status=None if wanted.status is None else DomainSkuStatus(wanted.status.value),
    )
    result = await services.list_skus(info.context.read(), domain_filter, page)
    return SkuConnection.from_page(result, Sku.from_domain)


async def sku(info: Info[AppContext, None], id: strawberry.ID) -> Sku | None:  # noqa: A002
    found: Sku | None = await fetch_node(info, "Sku", expect_global_id(id, "Sku"))
    return found


def catalog_change_of(shared: SharedReads, message: dict[str, Any]) -> Awaitable[CatalogChange]:
    """A catalog event's change, read once for every subscriber of this process. The app has
    the event hub read it before it wakes them (gpucloud/app.py)."""
    payload = message["payload"]
    return shared.catalog_change(int(message["id"]), int(payload["skuId"]), payload["kind"])


async def catalog_changed(info: Info[AppContext, None]) -> AsyncGenerator[CatalogChange, None]:
    """Every SKU added, updated or retired, from any process, as it happens."""
    ctx = info.context
    shared = ctx.shared  # one read per event for every subscriber of this process
    assert shared is not None  # the app gives every context one
    async with ctx.events.subscribe(services.CATALOG_TOPIC) as stream:
        async for message in stream:  # each event once: the hub drops repeats
            yield await catalog_change_of(shared, message)


async def create_sku(
    info: Info[AppContext, None],
    input: CreateSkuInput,  # noqa: A002
) -> SkuPayload | SkuError:
    ctx = info.context
    try:
        spec = SkuSpec.create(
            name=input.name, gpu_model=input.gpu_model, gpu_count=input.gpu_count,
            vcpus=input.vcpus, ram_gib=input.ram_gib, disk_gib=input.disk_gib,
            region=input.region, hourly_price_minor=input.hourly_price_minor,
            currency=input.currency,
        )  # fmt: skip
        created = await services.add_sku(ctx.uow(), spec, ctx.principal, ctx.meta)
    except DomainError as exc:
        return typed_error(exc, SkuError, SkuProblem)
    return SkuPayload(sku=Sku.from_domain(created))


async def retire_sku(
    info: Info[AppContext, None],
    id: strawberry.ID,  # noqa: A002
) -> SkuPayload | SkuError:
    ctx = info.context
    try:
        sku_id = expect_global_id(id, "Sku")
        with quoting(id, sku_id):
            retired = await services.retire_sku(ctx.uow(), sku_id, ctx.principal, ctx.meta)
    except DomainError as exc:
        return typed_error(exc, SkuError, SkuProblem)
    return SkuPayload(sku=Sku.from_domain(retired))


async def update_sku(
    info: Info[AppContext, None],
    id: strawberry.ID,  # noqa: A002
    input: UpdateSkuInput,  # noqa: A002
) -> SkuPayload | SkuError:
    ctx = info.context
    try:
        sku_id = expect_global_id(id, "Sku")
        changes = SkuChanges.create(
            name=input.name, hourly_price_minor=input.hourly_price_minor, vcpus=input.vcpus,
            ram_gib=input.ram_gib, disk_gib=input.disk_gib,
        )  # fmt: skip
        with quoting(id, sku_id):
            updated = await services.update_sku(ctx.uow(), sku_id, changes, ctx.principal, ctx.meta)
    except DomainError as exc:
        return typed_error(exc, SkuError, SkuProblem)
    ctx.loaders.sku.prime(sku_id, updated, force=True)  # later reads see the change
    return SkuPayload(sku=Sku.from_domain(updated))
