"""Reads that every subscriber of one process shares: one per event or poke, not one per socket.

5,000 sockets on one process all wake on the same event. Were each to read the database for
itself, one event would be 5,000 transactions through a pool of ten: seconds of queueing, and
pool timeouts that end subscriptions. Instead:

- `catalog_change(event_id, sku_id, kind)`: the first subscriber to ask reads the SKU and makes
  the event's `CatalogChange`; the others, waking on the same event, get that same object (so
  resolvers/broadcast.py can execute their selection once). Kept a few seconds (late
  subscribers of that event), then dropped, so a later event reads afresh.
- `notifications_after`: a DataLoader that gathers every subscription's "after my last seq" of
  one loop turn into a single query (`after_many`), de-duplicating sockets of one user at one
  cursor, which also share the views it makes. It caches nothing: each poke must read again.
- `notifications_on(event, user, seq)`: the same read, once per poke and key, kept a few seconds.
  `warm_notifications` (the event hub's warm-up for the topic, infra/pubsub.py) makes it for
  every live subscription the poke names (`cursors`) before any of them wakes; one that has
  moved on since reads for itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from strawberry.dataloader import DataLoader

from domain.catalog import services as catalog
from domain.notifications import services as notifications
from domain.ports import UnitOfWork
from schema.catalog import CatalogChange, CatalogChangeKind, Sku
from schema.context import SharedReads
from schema.notifications import Delivery, Notification

BATCH = 200  # notifications per subscriber per read; a subscriber reads again while full
_KEEP_SECONDS = 5.0


class _Read:
    """One shared read: the first caller does it, the others wait on `done` (cancelling a
    waiter touches no one else; `asyncio.shield` per waiter cost a tenth of a fan-out's CPU)."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _EventMemo:
    """Single-flight reads keyed by event, kept briefly."""

    def __init__(self) -> None:
        self._reads: dict[tuple[Any, ...], _Read] = {}

    async def get(self, key: tuple[Any, ...], load: Callable[[], Awaitable[Any]]) -> Any:
        read = self._reads.get(key)
        if read is not None:
            await read.done.wait()
            if read.error is None:
                return read.value
            if not isinstance(read.error, asyncio.CancelledError):
                raise read.error
            return await self.get(key, load)  # its reader went away: read again
        read = self._reads[key] = _Read()
        try:
            read.value = await load()
        except BaseException as exc:
            read.error = exc
            del self._reads[key]  # the next caller reads afresh
            raise
        finally:
            read.done.set()
        asyncio.get_running_loop().call_later(_KEEP_SECONDS, self._reads.pop, key, None)
        return read.value


def make_shared_reads(uow: Callable[[], UnitOfWork]) -> SharedReads:
    """Built once per process (the app's lifespan), shared by every websocket's context."""
    memo = _EventMemo()

    async def load(keys: Sequence[tuple[int, int]]) -> list[list[Delivery]]:
        found = await notifications.after_many(uow(), keys, BATCH)
        # One view per row and key: sockets of one user at one cursor share the objects.
        made = {key: [Delivery(n.seq, n.type, Notification.from_domain(n)) for n in rows]
                for key, rows in found.items()}  # fmt: skip
        return [made[key] for key in keys]

    async def catalog_change(event_id: int, sku_id: int, kind: str) -> CatalogChange:
        async def load() -> CatalogChange:
            current = await catalog.get_sku(uow(), sku_id)
            return CatalogChange(kind=CatalogChangeKind(kind),
                                 sku=None if current is None else Sku.from_domain(current))  # fmt: skip

        return await memo.get((event_id, sku_id), load)  # type: ignore[no-any-return]

    loader = DataLoader(load_fn=load, cache=False, max_batch_size=2000)
    pokes = _EventMemo()

    async def notifications_on(event_id: Any, user_id: int, last: int) -> list[Delivery]:
        key = (event_id, user_id, last)
        return await pokes.get(key, lambda: loader.load((user_id, last)))  # type: ignore[no-any-return]

    shared = SharedReads(
        notifications_after=loader,
        catalog_change=catalog_change,
        notifications_on=notifications_on,
    )
    return shared


async def warm_notifications(shared: SharedReads, message: dict[str, Any]) -> None:
    """Before a poke wakes this process's subscribers: make the reads they will ask for (one
    batched query), and turn the users it names into a set each of them looks itself up in."""
    payload = message["payload"]
    users = payload["userIds"] = frozenset(payload.get("userIds", ()))
    event_id = message.get("id")
    if event_id is None:
        return
    keys = shared.cursors.keys(users)
    await asyncio.gather(*(shared.notifications_on(event_id, *key) for key in keys))
