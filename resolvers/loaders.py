"""Dataloaders: batch object lookups of one request into one query per type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from domain.ports import UnitOfWork
from schema.context import Loaders

T = TypeVar("T")


def _loader(
    uow: Callable[[], UnitOfWork], fetch: Callable[[Any, Sequence[int]], Awaitable[dict[int, T]]]
) -> DataLoader[int, T | None]:
    async def load(ids: list[int]) -> list[T | None]:
        async with uow() as tx:
            found = await fetch(tx, ids)
        return [found.get(i) for i in ids]

    return DataLoader(load_fn=load)


def make_loaders(uow: Callable[[], UnitOfWork]) -> Loaders:
    return Loaders(
        sku=_loader(uow, lambda tx, ids: tx.skus.get_many(ids)),
        user=_loader(uow, lambda tx, ids: tx.users.get_many(ids)),
        api_token=_loader(uow, lambda tx, ids: tx.api_tokens.get_many(ids)),
        audit_event=_loader(uow, lambda tx, ids: tx.audit.get_many(ids)),
    )
