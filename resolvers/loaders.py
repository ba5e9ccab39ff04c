"""Dataloaders: batch object lookups of one request into one query per type."""

from __future__ import annotations

from collections.abc import Callable

from strawberry.dataloader import DataLoader

from domain.catalog.sku import Sku
from domain.ports import UnitOfWork
from schema.context import Loaders


def make_loaders(uow: Callable[[], UnitOfWork]) -> Loaders:
    async def load_skus(ids: list[int]) -> list[Sku | None]:
        async with uow() as tx:
            found = await tx.skus.get_many(ids)
        return [found.get(i) for i in ids]

    return Loaders(sku=DataLoader(load_fn=load_skus))
