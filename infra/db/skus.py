"""The SKU repository: SQL for the catalog, mapping rows to domain entities."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Integer, Select, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.catalog.sku import (
    Sku,
    SkuChanges,
    SkuErrorCode,
    SkuFilter,
    SkuSpec,
    SkuStatus,
    name_taken,
)
from domain.errors import NotFound, Problem
from domain.money import Money
from domain.pagination import Page, PageRequest
from infra.db.paging import page_of
from infra.db.tables import skus

# Every query here reads these columns in this order, so a row is unpacked by position: a
# page of 50 costs 650 attribute lookups by name otherwise.
_COLUMNS = (
    skus.c.id,
    skus.c.name,
    skus.c.gpu_model,
    skus.c.gpu_count,
    skus.c.vcpus,
    skus.c.ram_gib,
    skus.c.disk_gib,
    skus.c.region,
    skus.c.hourly_price_minor,
    skus.c.currency,
    skus.c.status,
    skus.c.created_at,
    skus.c.retired_at,
)
_STATUS = {status.value: status for status in SkuStatus}


def _to_sku(row: Any) -> Sku:
    (
        sku_id,
        name,
        gpu_model,
        gpu_count,
        vcpus,
        ram_gib,
        disk_gib,
        region,
        price_minor,
        currency,
        status,
        created_at,
        retired_at,
    ) = row
    return Sku(
        id=sku_id,
        name=name,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        vcpus=vcpus,
        ram_gib=ram_gib,
        disk_gib=disk_gib,
        region=region,
        hourly_price=Money(price_minor, currency),
        status=_STATUS[status],
        created_at=created_at,
        retired_at=retired_at,
    )


@cache
def _page_query(
    status: bool, gpu_model: bool, region: bool, after: bool, before: bool, backward: bool
) -> Select[Any]:
    """The catalog page query of one filter shape, built once with its values bound: SQLAlchemy
    then reuses its cache key instead of building the query and the key for every request."""
    stmt = select(*_COLUMNS)
    if status:
        stmt = stmt.where(skus.c.status == bindparam("status", type_=skus.c.status.type))
    if gpu_model:
        stmt = stmt.where(skus.c.gpu_model == bindparam("gpu_model", type_=skus.c.gpu_model.type))
    if region:
        stmt = stmt.where(skus.c.region == bindparam("region", type_=skus.c.region.type))
    if after:
        stmt = stmt.where(skus.c.id > bindparam("after", type_=skus.c.id.type))
    if before:
        stmt = stmt.where(skus.c.id < bindparam("before", type_=skus.c.id.type))
    order = skus.c.id.desc() if backward else skus.c.id  # `last`: read from the end
    return stmt.order_by(order).limit(bindparam("limit", type_=Integer))


class SqlSkuRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, spec: SkuSpec) -> Sku:
        stmt = (
            insert(skus)
            .values(
                name=spec.name,
                gpu_model=spec.gpu_model,
                gpu_count=spec.gpu_count,
                vcpus=spec.vcpus,
                ram_gib=spec.ram_gib,
                disk_gib=spec.disk_gib,
                region=spec.region,
                hourly_price_minor=spec.hourly_price.amount_minor,
                currency=spec.hourly_price.currency,
            )
            .returning(*_COLUMNS)
        )
        try:
            row = (await self._conn.execute(stmt)).one()
        except IntegrityError as exc:
            if "uq_skus_lower_name" in str(exc.orig):
                raise name_taken(spec.name) from exc
            raise
        return _to_sku(row)

    async def get(self, sku_id: int, *, for_update: bool = False) -> Sku | None:
        stmt = select(*_COLUMNS).where(skus.c.id == sku_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _to_sku(row)

    async def get_many(self, sku_ids: Sequence[int]) -> dict[int, Sku]:
        if not sku_ids:
            return {}
        rows = await self._conn.execute(select(*_COLUMNS).where(skus.c.id.in_(list(sku_ids))))
        return {row.id: _to_sku(row) for row in rows}

    async def get_by_name(self, name: str) -> Sku | None:
        stmt = select(*_COLUMNS).where(func.lower(skus.c.name) == name.lower())
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _to_sku(row)

    async def list(self, sku_filter: SkuFilter, page: PageRequest) -> Page[Sku]:
        values: dict[str, Any] = {"limit": page.first + 1}
        if sku_filter.status is not None:
            values["status"] = sku_filter.status.value
        if sku_filter.gpu_model is not None:
            values["gpu_model"] = sku_filter.gpu_model.strip().upper()
        if sku_filter.region is not None:
            values["region"] = sku_filter.region
        if page.after_key is not None:
            values["after"] = page.after_key
        if page.before_key is not None:
            values["before"] = page.before_key
        shape = (name in values for name in ("status", "gpu_model", "region", "after", "before"))
        stmt = _page_query(*shape, page.backward)
        return page_of((await self._conn.execute(stmt, values)).all(), page, _to_sku)

    async def set_status(self, sku_id: int, status: SkuStatus) -> Sku:
        retired_at = func.now() if status is SkuStatus.RETIRED else None
        stmt = (
            update(skus)
            .where(skus.c.id == sku_id)
            .values(status=status.value, retired_at=retired_at)
            .returning(*_COLUMNS)
        )
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            raise NotFound(Problem(SkuErrorCode.NOT_FOUND, f"No SKU with id {sku_id}.", "id"))
        return _to_sku(row)

    async def update(self, sku_id: int, changes: SkuChanges) -> Sku:
        columns = {"name": changes.name, "hourly_price_minor": changes.hourly_price_minor,
                   "vcpus": changes.vcpus, "ram_gib": changes.ram_gib,
                   "disk_gib": changes.disk_gib}  # fmt: skip
        values = {column: value for column, value in columns.items() if value is not None}
        stmt = update(skus).where(skus.c.id == sku_id).values(**values).returning(*_COLUMNS)
        try:
            row = (await self._conn.execute(stmt)).first()
        except IntegrityError as exc:
            if "uq_skus_lower_name" in str(exc.orig) and changes.name is not None:
                raise name_taken(changes.name) from exc
            raise
        if row is None:
            raise NotFound(Problem(SkuErrorCode.NOT_FOUND, f"No SKU with id {sku_id}.", "id"))
        return _to_sku(row)

    async def count(self) -> int:
        return int((await self._conn.execute(select(func.count()).select_from(skus))).scalar_one())
