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


MIXED = "{ viewer { id email } skus(first: 5) { edges { node { name } } } }"


async def test_each_viewer_gets_its_own_results(app, client, uow, accounts) -> None:
    """A query whose answer depends on the caller is never answered from another caller's
    entry; the public catalog is one entry for everyone, signed in or not."""
    await add_skus(uow, 2)
    await app.state.resources.hub.wait_ready()
    alice, bob = await accounts.sign_up(), await accounts.sign_up()
    for _ in range(2):  # a second round would come from the cache if entries were shared
        for who in (alice, bob):
            for query in (MIXED, "{ viewer { email } }"):
                got = await who.gql(query)
                assert got["data"]["viewer"]["email"] == who.email.lower(), got
        mixed = [(await who.gql(MIXED))["data"]["skus"] for who in (alice, bob)]
        assert mixed[0] == mixed[1] and len(mixed[0]["edges"]) == 2
        anonymous = await gql(client, "{ viewer { email } }")
        assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    stats = app.state.resources.metrics.state.result_cache_stats
    before = dict(stats)
    public = [await alice.gql(QUERY), await bob.gql(QUERY), await gql(client, QUERY)]
    assert public[0] == public[1] == public[2]
    assert stats["store"] - before["store"] == 1 and stats["hit"] - before["hit"] == 2
