"""The result cache inside the real app: a repeat costs no SQL, an event invalidates it."""

from __future__ import annotations

import asyncio

from tests.api.helpers import add_skus, gql
from tests.api.test_sql_statements import counting

QUERY = "{ skus(first: 50) { edges { node { name } } } }"


async def test_repeat_is_served_from_cache_until_a_catalog_event(app, client, uow) -> None:
    await add_skus(uow, 3)
    hub = app.state.resources.hub
    await hub.wait_ready()
    first = await gql(client, QUERY)
    with counting(app) as statements:
        again = await gql(client, QUERY)
    assert again == first and statements == []

    await add_skus(uow, 1, name="new")
    # What the worker does after the commit: publish the outbox event through Redis.
    await hub.publish("catalog", {"id": 10_001, "payload": {"kind": "added", "skuId": 4}})
    for _ in range(50):
        names = [e["node"]["name"] for e in (await gql(client, QUERY))["data"]["skus"]["edges"]]
        if "new-0" in names:
            break
        await asyncio.sleep(0.1)
    assert "new-0" in names


async def test_errors_and_private_fields_are_not_cached(app, client, uow) -> None:
    await app.state.resources.hub.wait_ready()
    bad = '{ sku(id: "nope") { id } }'
    await gql(client, bad)
    with counting(app):
        assert (await gql(client, bad))["errors"][0]["extensions"]["code"] == "INVALID_ID"
    metrics = (await client.get("/metrics")).text
    assert 'gpucloud_graphql_result_cache_total{outcome="store"} 0.0' in metrics


async def test_concurrent_misses_execute_once(app, client, uow) -> None:
    await add_skus(uow, 5)
    await app.state.resources.hub.wait_ready()
    with counting(app) as statements:
        results = await asyncio.gather(*(gql(client, QUERY) for _ in range(10)))
    assert all(r == results[0] and "errors" not in r for r in results)
    assert len(statements) == 1  # the first executes; the other nine wait for its result
