"""In-memory fakes of the domain ports, for pure unit tests of the use cases.

They honour the contracts written in `domain/ports.py` and mirror the SQL adapters' behaviour:
a unit of work sees a private working copy of the committed state; `commit` publishes the copy
and the recorded events together; leaving the block without committing throws both away. Ids
come from a sequence that, like a database sequence, is not rolled back.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from domain.audit.records import AuditEvent, AuditRecord
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
from domain.events import DomainEvent
from domain.pagination import Page, PageRequest
from domain.ports import SkuRepository


@dataclass
class FakeDatabase:
    """Committed state shared by every unit of work opened on it."""

    skus: dict[int, Sku] = field(default_factory=dict)
    outbox: list[DomainEvent] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class FakeSkuRepository:
    def __init__(self, rows: dict[int, Sku], ids: itertools.count[int]) -> None:
        self._rows = rows
        self._ids = ids

    async def add(self, spec: SkuSpec) -> Sku:
        if await self.get_by_name(spec.name) is not None:
            raise name_taken(spec.name)
        sku = Sku(
            id=next(self._ids),
            name=spec.name,
            gpu_model=spec.gpu_model,
            gpu_count=spec.gpu_count,
            vcpus=spec.vcpus,
            ram_gib=spec.ram_gib,
            disk_gib=spec.disk_gib,
            region=spec.region,
            hourly_price=spec.hourly_price,
            status=SkuStatus.ACTIVE,
            created_at=datetime.now(UTC),
            retired_at=None,
        )
        self._rows[sku.id] = sku
        return sku

    async def get(self, sku_id: int, *, for_update: bool = False) -> Sku | None:
        return self._rows.get(sku_id)

    async def get_many(self, sku_ids: Sequence[int]) -> dict[int, Sku]:
        return {i: self._rows[i] for i in sku_ids if i in self._rows}

    async def get_by_name(self, name: str) -> Sku | None:
        wanted = name.lower()
        return next((s for s in self._rows.values() if s.name.lower() == wanted), None)

    async def list(self, sku_filter: SkuFilter, page: PageRequest) -> Page[Sku]:
        model = None if sku_filter.gpu_model is None else sku_filter.gpu_model.strip().upper()
        matching = [
            sku
            for key, sku in sorted(self._rows.items())
            if (sku_filter.status is None or sku.status is sku_filter.status)
            and (model is None or sku.gpu_model == model)
            and (sku_filter.region is None or sku.region == sku_filter.region)
            and (page.after_key is None or key > page.after_key)
        ]
        return Page(
            [(sku.id, sku) for sku in matching[: page.first]],
            has_next_page=len(matching) > page.first,
            has_previous_page=page.after_key is not None,
        )

    async def set_status(self, sku_id: int, status: SkuStatus) -> Sku:
        sku = self._rows.get(sku_id)
        if sku is None:
            raise NotFound(Problem(SkuErrorCode.NOT_FOUND, f"No SKU with id {sku_id}.", "id"))
        retired_at = datetime.now(UTC) if status is SkuStatus.RETIRED else None
        updated = replace(sku, status=status, retired_at=retired_at)
        self._rows[sku_id] = updated
        return updated

    async def update(self, sku_id: int, changes: SkuChanges) -> Sku:
        sku = self._rows.get(sku_id)
        if sku is None:
            raise NotFound(Problem(SkuErrorCode.NOT_FOUND, f"No SKU with id {sku_id}.", "id"))
        if changes.name is not None:
            clash = await self.get_by_name(changes.name)
            if clash is not None and clash.id != sku_id:
                raise name_taken(changes.name)
        price = sku.hourly_price
        if changes.hourly_price_minor is not None:
            price = replace(price, amount_minor=changes.hourly_price_minor)
        updated = replace(
            sku, name=changes.name or sku.name, hourly_price=price,
            vcpus=changes.vcpus or sku.vcpus, ram_gib=changes.ram_gib or sku.ram_gib,
            disk_gib=changes.disk_gib or sku.disk_gib,
        )  # fmt: skip
        self._rows[sku_id] = updated
        return updated

    async def count(self) -> int:
        return len(self._rows)


class FakeAuditLog:
    """Only `append` is faked: the use cases under unit test write audit rows, they do not
    read them (chain and queries are tested against PostgreSQL)."""

    def __init__(self, rows: list[AuditRecord]) -> None:
        self.rows = rows

    async def append(self, record: AuditRecord) -> AuditEvent:
        self.rows.append(record)
        return AuditEvent(len(self.rows), record, b"", b"")


class FakeUnitOfWork:
    """One transaction over a `FakeDatabase`; counts commits and rollbacks for assertions."""

    skus: SkuRepository  # the port's type: a protocol attribute is invariant

    def __init__(self, db: FakeDatabase | None = None) -> None:
        self.db = db if db is not None else FakeDatabase()
        self.commits = 0
        self.rollbacks = 0
        self._active = False
        self._working: dict[int, Sku] = {}
        self._audit: list[AuditRecord] = []
        self._events: list[DomainEvent] = []

    @property
    def pending_events(self) -> list[DomainEvent]:
        return list(self._events)

    def _begin(self) -> None:
        self._working = dict(self.db.skus)
        self._audit = list(self.db.audit)
        self._events = []
        self.skus = FakeSkuRepository(self._working, self.db.ids)
        self.audit = FakeAuditLog(self._audit)  # type: ignore[assignment]

    async def __aenter__(self) -> Self:
        assert not self._active, "unit of work entered twice"
        self._active = True
        self._begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed is lost, exactly as an open SQL transaction on close.
        if self._events or self._working != self.db.skus or self._audit != self.db.audit:
            await self.rollback()
        self._active = False

    def record(self, event: DomainEvent) -> None:
        assert self._active, "record outside `async with`"
        self._events.append(event)

    async def commit(self) -> None:
        assert self._active, "commit outside `async with`"
        self.db.skus = dict(self._working)
        self.db.audit = list(self._audit)
        self.db.outbox.extend(self._events)
        self.commits += 1
        self._begin()

    async def rollback(self) -> None:
        assert self._active, "rollback outside `async with`"
        self.rollbacks += 1
        self._begin()
