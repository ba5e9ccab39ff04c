"""Ports: what the domain needs from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol, Self

from domain.catalog.sku import Sku, SkuFilter, SkuSpec, SkuStatus
from domain.events import DomainEvent
from domain.pagination import Page, PageRequest


class SkuRepository(Protocol):
    async def add(self, spec: SkuSpec) -> Sku:
        """Insert; raises `Conflict` (NAME_TAKEN) when the name is used, case-insensitively."""
        ...

    async def get(self, sku_id: int) -> Sku | None: ...

    async def get_many(self, sku_ids: Sequence[int]) -> dict[int, Sku]: ...

    async def get_by_name(self, name: str) -> Sku | None: ...

    async def list(self, sku_filter: SkuFilter, page: PageRequest) -> Page[Sku]: ...

    async def set_status(self, sku_id: int, status: SkuStatus) -> Sku: ...

    async def count(self) -> int: ...


class UnitOfWork(Protocol):
    """One transaction. Use cases call `commit`; leaving the block without it rolls back.

    Events recorded with `record` are written to the outbox inside the same transaction, so a
    change and the news of it are stored together or not at all.
    """

    skus: SkuRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def record(self, event: DomainEvent) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class EventStream(Protocol):
    """Live events of a topic from every process. The iterator raises `SubscriberLagged` when
    the subscriber fell too far behind."""

    def subscribe(
        self, topic: str
    ) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]: ...
