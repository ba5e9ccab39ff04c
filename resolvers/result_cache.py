"""A per-process cache of whole results for public, read-mostly queries (the catalog).

Executing a page of 50 SKUs through GraphQL costs milliseconds of CPU per request, almost all of
it in the engine resolving ~700 fields; the data changes a few times a day. So an error-free
result of a query that reads only public root fields is kept and served again until the next
change, which every process learns of through the same Redis events that feed subscriptions.

Staleness is bounded three ways: an event invalidates everything; a result computed while an
event arrived is not stored (generation check); and entries expire after `ttl` seconds, which
covers events that never come (worker down). While the event stream is not live (Redis down),
nothing is cached, and entries from before a reconnect are never served.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from graphql import FieldNode, OperationDefinitionNode, OperationType
from strawberry.extensions import SchemaExtension

log = structlog.get_logger(__name__)

# Root fields whose answers are the same for every caller: nothing below them depends on who
# asks (`sku`'s visibility rule admits everyone; no Sku field is per-viewer).
PUBLIC_ROOT_FIELDS = frozenset({"skus", "sku", "__typename"})


@dataclass
class _Entry:
    result: Any
    epoch: int
    expires: float


@dataclass
class ResultCache:
    ttl: float = 5.0
    maxsize: int = 256
    live_epoch: Callable[[], int | None] = lambda: None
    generation: int = 0
    stats: dict[str, int] = field(default_factory=lambda: {"hit": 0, "miss": 0, "store": 0})
    _entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    # One execution per key at a time: concurrent misses wait for it instead of all executing
    # the same query when an entry expires under load.
    inflight: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    def get(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        epoch = self.live_epoch()
        if (
            entry is None
            or epoch is None
            or entry.epoch != epoch
            or entry.expires < time.monotonic()
        ):
            if entry is not None:
                del self._entries[key]
            self.stats["miss"] += 1
            return None
        self._entries.move_to_end(key)
        self.stats["hit"] += 1
        return entry.result

    def put(self, key: str, result: Any, generation: int, epoch: int | None) -> None:
        """Store only what was computed entirely within one generation and one live epoch."""
        if epoch is None or generation != self.generation or epoch != self.live_epoch():
            return
        self._entries[key] = _Entry(result, epoch, time.monotonic() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        self.stats["store"] += 1

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()


def cache_key(
    operation: OperationDefinitionNode, query: str, variables: Any, name: str | None
) -> str | None:
    """A key for a cacheable operation, or None. Only queries whose every root field answers
    the same for every caller (PUBLIC_ROOT_FIELDS) are cached, under one key for all callers.
    Anything that reads the caller's own data (`viewer`, `allocations`, `node` of an owned
    object, admin views) is never cached: its entry would have to be keyed by the viewer and
    dropped on every change to that viewer's data, which this cache is not told of
    (tests/api/test_result_cache.py::test_each_viewer_gets_its_own_results)."""
    if operation.operation is not OperationType.QUERY:
        return None
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.name.value not in PUBLIC_ROOT_FIELDS:
            return None  # fragments or private fields: never shared between callers
    try:
        encoded = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return None
    return f"{name or ''}\x00{encoded}\x00{query}"


def _operation(document: Any, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((op for op in operations if op.name and op.name.value == name), None)


def result_cache_extension(cache: ResultCache) -> type[SchemaExtension]:
    class ResultCacheExtension(SchemaExtension):
        async def on_execute(self) -> AsyncIterator[None]:
            ctx = self.execution_context
            operation = (
                None
                if ctx.graphql_document is None
                else _operation(ctx.graphql_document, ctx.operation_name)
            )
            key = (
                None
                if operation is None or ctx.query is None
                else cache_key(operation, ctx.query, ctx.variables, ctx.operation_name)
            )
            if key is None:
                yield
                return
            cached = cache.get(key)
            if cached is None and key in cache.inflight:
                cached = await asyncio.shield(cache.inflight[key])
            if cached is not None:
                ctx.result = cached  # Strawberry skips execution when a result is already set
                yield
                return
            generation, epoch = cache.generation, cache.live_epoch()
            leader: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            cache.inflight[key] = leader
            shared = None
            try:
                yield
                result = ctx.result
                if result is not None and not getattr(result, "errors", None):
                    cache.put(key, result, generation, epoch)
                    # Waiters get it only if it is still current (no event arrived meanwhile).
                    if generation == cache.generation:
                        shared = result
            finally:
                cache.inflight.pop(key, None)
                leader.set_result(shared)  # None: waiters execute for themselves

    return ResultCacheExtension
