"""Fan-out through real Redis: across hubs (processes), from the relay's publisher, lag handling."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from domain.errors import SubscriberLagged
from infra.db.outbox import OutboxMessage
from infra.pubsub import EventHub
from jobs.relay import EventPublisher


@pytest.fixture
async def hubs(servers, redis_namespace):  # type: ignore[no-untyped-def]
    """Two hubs on separate connections stand in for two API processes."""
    clients = [aioredis.Redis.from_url(servers.redis_url) for _ in range(2)]
    made = [EventHub(c, redis_namespace) for c in clients]
    for hub in made:
        await hub.start()
        await hub.wait_ready()
    yield made
    for hub, client in zip(made, clients, strict=True):
        await hub.stop()
        await client.aclose()


async def test_message_published_in_one_process_reaches_another(hubs) -> None:  # type: ignore[no-untyped-def]
    a, b = hubs
    async with b.subscribe("catalog") as stream:
        receivers = await a.publish("catalog", {"id": 1, "payload": {"x": 1}})
        assert receivers >= 2  # both hubs hold the pattern subscription
        message = await asyncio.wait_for(anext(stream), 5)
    assert message == {"id": 1, "payload": {"x": 1}}


async def test_topics_are_separate(hubs) -> None:  # type: ignore[no-untyped-def]
    a, b = hubs
    async with b.subscribe("catalog") as stream:
        await a.publish("other", {"id": 1})
        await a.publish("catalog", {"id": 2})
        assert (await asyncio.wait_for(anext(stream), 5))["id"] == 2


async def test_a_subscriber_that_falls_behind_is_told_not_starved(hubs) -> None:  # type: ignore[no-untyped-def]
    a, b = hubs
    async with b.subscribe("catalog") as stream:
        for i in range(400):
            await a.publish("catalog", {"id": i})
        await asyncio.sleep(0.5)
        with pytest.raises(SubscriberLagged):
            async for _ in stream:
                pass


async def test_the_relay_publishes_to_every_process_and_counts(
    servers, hubs, redis_namespace
) -> None:  # type: ignore[no-untyped-def]
    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        publisher = EventPublisher(client, redis_namespace)
        async with hubs[0].subscribe("catalog") as first, hubs[1].subscribe("catalog") as second:
            message = OutboxMessage(7, "catalog", "sku.added", {"skuId": 1})
            assert await publisher.publish(message) >= 2  # both hubs hold the subscription
            for stream in (first, second):
                got = await asyncio.wait_for(anext(stream), 5)
                assert got == {"id": 7, "topic": "catalog", "name": "sku.added",
                               "payload": {"skuId": 1}}  # fmt: skip
        stats = await client.hgetall(f"{redis_namespace}:jobs")
        assert int(stats[b"outbox_relay:published"]) >= 1
    finally:
        await client.aclose()


async def test_a_republished_event_reaches_subscribers_once(hubs) -> None:  # type: ignore[no-untyped-def]
    a, b = hubs
    async with b.subscribe("catalog") as stream, b.subscribe("fleet") as other:
        await a.publish("catalog", {"id": 9, "payload": {}})
        await a.publish("catalog", {"id": 9, "payload": {}})  # the relay, after a crash
        await a.publish("fleet", {"id": 9, "payload": {}})  # recent ids are kept per topic
        await a.publish("catalog", {"id": 10, "payload": {}})
        assert (await asyncio.wait_for(anext(stream), 5))["id"] == 9
        assert (await asyncio.wait_for(anext(stream), 5))["id"] == 10
        assert (await asyncio.wait_for(anext(other), 5))["id"] == 9


async def test_a_warm_up_runs_once_per_message_in_order_before_subscribers_wake(hubs) -> None:  # type: ignore[no-untyped-def]
    a, b = hubs
    warmed: list[int] = []
    release = asyncio.Event()

    async def warm(message: dict[str, object]) -> None:
        if message["id"] == 1:
            await release.wait()  # the first warm-up is slow: the others must queue behind it
        if message["id"] == 2:
            raise RuntimeError("read failed")  # delivered anyway: subscribers read themselves
        warmed.append(message["id"])  # type: ignore[arg-type]

    b.warm_before_delivery("catalog", warm)
    async with b.subscribe("catalog") as first, b.subscribe("catalog") as second:
        for i in (1, 2, 3):
            await a.publish("catalog", {"id": i})
        with pytest.raises(TimeoutError):  # held back while message 1 warms up
            await asyncio.wait_for(anext(first), 0.3)
        assert warmed == []
        release.set()
        for stream in (first, second):
            got = [(await asyncio.wait_for(anext(stream), 5))["id"] for _ in range(3)]
            assert got == [1, 2, 3]
    assert warmed == [1, 3]  # once per message, not once per subscriber


async def test_no_warm_up_without_subscribers(hubs) -> None:  # type: ignore[no-untyped-def]
    a, b = hubs
    warmed: list[object] = []

    async def warm(message: dict[str, object]) -> None:
        warmed.append(message["id"])

    b.warm_before_delivery("catalog", warm)
    await a.publish("catalog", {"id": 1})
    async with b.subscribe("other") as stream:  # Redis keeps order: "catalog" came first
        await a.publish("other", {"id": 2})
        assert (await asyncio.wait_for(anext(stream), 5))["id"] == 2
    assert warmed == []
