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


# Each factory gets the unit of work for domain reads and `one`, the one for batched lookups
# (one statement each: one round trip, no transaction on the read pool).
Factory = Callable[[Callable[[], UnitOfWork], Callable[[], UnitOfWork]], DataLoader[Any, Any]]
_FACTORIES: dict[str, Factory] = {
    "sku": lambda uow, one: _loader(one, lambda tx, ids: tx.skus.get_many(ids)),
    "user": lambda uow, one: _loader(one, lambda tx, ids: tx.users.get_many(ids)),
    "api_token": lambda uow, one: _loader(one, lambda tx, ids: tx.api_tokens.get_many(ids)),
    "ssh_key": lambda uow, one: _loader(one, lambda tx, ids: tx.ssh_keys.get_many(ids)),
    "allocation": lambda uow, one: _loader(one, lambda tx, ids: tx.allocations.get_many(ids)),
    "allocation_events": lambda uow, one: _loader(
        one, lambda tx, ids: tx.allocations.events(ids, EVENTS)
    ),
    "audit_event": lambda uow, one: _loader(one, lambda tx, ids: tx.audit.get_many(ids)),
    "payment": lambda uow, one: _loader(one, lambda tx, ids: tx.payments.get_many(ids)),
    "refund": lambda uow, one: _loader(one, lambda tx, ids: tx.payments.refunds_by_id(ids)),
    "fleet_node": lambda uow, one: _loader(one, lambda tx, ids: tx.nodes.get_many(ids)),
    "node_gpus": lambda uow, one: _loader(one, lambda tx, ids: tx.nodes.gpus(ids)),
    "ledger_entry": lambda uow, one: _loader(one, lambda tx, ids: tx.ledger.wallet_entries(ids)),
    "node_event": lambda uow, one: _loader(one, lambda tx, ids: tx.nodes.events_by_id(ids)),
    "reconciliation_issue": lambda uow, one: _loader(
        one, lambda tx, ids: tx.stripe.issues_by_id(ids)
    ),
    "node_events": lambda uow, one: _each(uow, lambda tx, key: node_services.node_events(tx, *key)),
    "sku_available": lambda uow, one: _available(one),
    "wallet": lambda uow, one: _each(uow, billing.wallet),
    "wallets": lambda uow, one: _each(uow, billing.wallets),
    "ledger_entries": lambda uow, one: _each(uow, billing.ledger_entries),
    "payments_of": lambda uow, one: _each(uow, billing.payments),
    "refunds_of": lambda uow, one: _each(uow, billing.refunds),
    "statements": lambda uow, one: _each(uow, billing.statements),
}


class _LazyLoaders(Loaders):
    """Each loader is made on first use. A websocket's context lives as long as the socket and
    most sockets never use one: made eagerly, the 19 loaders were a fifth of the memory of an
    idle subscriber (bench/fanout.py)."""

    def __init__(  # no fields yet: see __getattr__
        self, uow: Callable[[], UnitOfWork], one: Callable[[], UnitOfWork]
    ) -> None:
        self._uow, self._one = uow, one

    def __getattr__(self, name: str) -> Any:  # only for attributes not made yet
        factory = _FACTORIES.get(name)
        if factory is None:
            raise AttributeError(name)
        loader = factory(self._uow, self._one)
        setattr(self, name, loader)
        return loader


def make_loaders(
    uow: Callable[[], UnitOfWork], reads: Callable[[], UnitOfWork] | None = None
) -> Loaders:
    """`reads` serves the batched lookups; reads through domain use cases keep `uow`."""
    return _LazyLoaders(uow, reads or uow)
