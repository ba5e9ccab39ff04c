"""The public-query result cache: what may be cached, and when an entry is no longer served."""

from __future__ import annotations

import time

import pytest
from graphql import OperationDefinitionNode, parse

from resolvers.result_cache import ResultCache, cache_key


def _op(query: str) -> OperationDefinitionNode:
    return next(d for d in parse(query).definitions if isinstance(d, OperationDefinitionNode))


@pytest.mark.parametrize(
    "query",
    ["{ skus { edges { cursor } } }", "query Q($id: ID!) { sku(id: $id) { name } __typename }"],
)
def test_public_queries_get_a_key(query: str) -> None:
    assert cache_key(_op(query), query, {"id": "x"}, None) is not None


@pytest.mark.parametrize(
    "query",
    [
        '{ node(id: "U2t1OjE") { id } }',  # node can return private objects in later areas
        "{ skus { edges { cursor } } node(id: 1) { id } }",
        "{ ...F } fragment F on Query { skus { edges { cursor } } }",
        "subscription { catalogChanged { kind } }",
    ],
)
def test_anything_else_is_never_cached(query: str) -> None:
    assert cache_key(_op(query), query, {}, None) is None


def test_key_depends_on_variables_and_operation_but_not_their_order() -> None:
    query = "query Q($a: Int, $b: Int) { skus(first: $a) { edges { cursor } } }"
    op = _op(query)
    assert cache_key(op, query, {"a": 1, "b": 2}, "Q") == cache_key(
        op, query, {"b": 2, "a": 1}, "Q"
    )
    assert cache_key(op, query, {"a": 1}, "Q") != cache_key(op, query, {"a": 2}, "Q")
    assert cache_key(op, query, {"a": 1}, "Q") != cache_key(op, query, {"a": 1}, None)


def live(epoch: int | None = 1) -> ResultCache:
    return ResultCache(ttl=60, live_epoch=lambda: epoch)


def test_hit_after_store_and_counts() -> None:
    cache = live()
    assert cache.get("k") is None
    cache.put("k", "result", cache.generation, 1)
    assert cache.get("k") == "result"
    assert cache.stats == {"hit": 1, "miss": 1, "store": 1}


def test_invalidation_clears_and_refuses_results_computed_across_it() -> None:
    cache = live()
    cache.put("k", "old", cache.generation, 1)
    started = cache.generation
    cache.invalidate()
    assert cache.get("k") is None
    cache.put("k", "computed before the change", started, 1)
    assert cache.get("k") is None


def test_nothing_is_cached_while_events_are_not_live() -> None:
    cache = live(None)
    cache.put("k", "r", cache.generation, None)
    assert cache.get("k") is None


def test_entries_from_before_a_reconnect_are_not_served() -> None:
    epoch = {"now": 1}
    cache = ResultCache(ttl=60, live_epoch=lambda: epoch["now"])
    cache.put("k", "r", cache.generation, 1)
    epoch["now"] = 2  # Redis reconnected: events in between may be lost
    assert cache.get("k") is None


def test_entries_expire() -> None:
    cache = ResultCache(ttl=0.01, live_epoch=lambda: 1)
    cache.put("k", "r", cache.generation, 1)
    time.sleep(0.02)
    assert cache.get("k") is None


def test_size_is_bounded_least_recently_used_first() -> None:
    cache = ResultCache(ttl=60, maxsize=2, live_epoch=lambda: 1)
    cache.put("a", 1, 0, 1)
    cache.put("b", 2, 0, 1)
    assert cache.get("a") == 1
    cache.put("c", 3, 0, 1)
    assert cache.get("b") is None
    assert cache.get("a") == 1 and cache.get("c") == 3
