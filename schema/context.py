"""What every resolver gets: the request id, a unit-of-work factory, event streams, loaders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strawberry.dataloader import DataLoader

from domain.catalog.sku import Sku
from domain.ports import EventStream, UnitOfWork


@dataclass
class Loaders:
    """Per-request batching caches, so N objects cost one query, not N."""

    sku: DataLoader[int, Sku | None]


@dataclass
class AppContext:
    request_id: str
    uow: Callable[[], UnitOfWork]
    events: EventStream
    loaders: Loaders
    request: Any = None
    response: Any = None
