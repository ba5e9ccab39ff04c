"""Dataloaders: batch object lookups of one request into one query per type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from domain.catalog import services as catalog
from domain.catalog.sku import Sku
from domain.errors import DomainError
from domain.fleet import node_services
from domain.ports import UnitOfWork
from resolvers import billing
from schema.context import Loaders

K = TypeVar("K", bound=Hashable)
EVENTS = 50  # an allocation's history shown with it: its latest events
T = TypeVar("T")


def _loader(
    uow: Callable[[], UnitOfWork], fetch: Callable[[Any, Sequence[int]], Awaitable[dict[int, T]]]
) -> DataLoader[int, T | None]:
    async def load(ids: list[int]) -> list[T | None]:
        async with uow() as tx:
            found = await fetch(tx, ids)
        return [found.get(i) for i in ids]

    return DataLoader(load_fn=load)


def _each(
    uow: Callable[[], UnitOfWork], read: Callable[[UnitOfWork, K], Awaitable[T]]
) -> DataLoader[K, T]:
    """For reads with no batched form: each distinct key of a request is read once (in its own
    transaction, by a domain use case), and a key refused with a domain error fails alone."""

    async def load(keys: list[K]) -> list[T | BaseException]:
        found: list[T | BaseException] = []
        for key in keys:
            try:
                found.append(await read(uow(), key))
            except DomainError as exc:
                found.append(exc)
        return found

    return DataLoader(load_fn=load)


def _available(uow: Callable[[], UnitOfWork]) -> DataLoader[Sku, int]:
    """How many more of each SKU of a request could be placed: one query for all of them."""

    async def load(skus: list[Sku]) -> list[int]:
        found = await catalog.available(uow(), skus)
        return [found[sku.id] for sku in skus]

    return DataLoader(load_fn=load)


def make_loaders(
    uow: Callable[[], UnitOfWork], reads: Callable[[], UnitOfWork] | None = None
) -> Loaders:
    """`reads` serves the batched lookups (one statement each: one round trip, no transaction);
    reads through domain use cases keep `uow`."""
    one = reads or uow
    return Loaders(
        sku=_loader(one, lambda tx, ids: tx.skus.get_many(ids)),
        user=_loader(one, lambda tx, ids: tx.users.get_many(ids)),
        api_token=_loader(one, lambda tx, ids: tx.api_tokens.get_many(ids)),
        ssh_key=_loader(one, lambda tx, ids: tx.ssh_keys.get_many(ids)),
        allocation=_loader(one, lambda tx, ids: tx.allocations.get_many(ids)),
        allocation_events=_loader(one, lambda tx, ids: tx.allocations.events(ids, EVENTS)),
        audit_event=_loader(one, lambda tx, ids: tx.audit.get_many(ids)),
        payment=_loader(one, lambda tx, ids: tx.payments.get_many(ids)),
        refund=_loader(one, lambda tx, ids: tx.payments.refunds_by_id(ids)),
        fleet_node=_loader(one, lambda tx, ids: tx.nodes.get_many(ids)),
        node_gpus=_loader(one, lambda tx, ids: tx.nodes.gpus(ids)),
        node_events=_each(uow, lambda tx, key: node_services.node_events(tx, *key)),
        sku_available=_available(one),
        wallet=_each(uow, billing.wallet),
        wallets=_each(uow, billing.wallets),
        ledger_entries=_each(uow, billing.ledger_entries),
        payments_of=_each(uow, billing.payments),
        refunds_of=_each(uow, billing.refunds),
        statements=_each(uow, billing.statements),
    )
