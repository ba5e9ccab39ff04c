"""Fan-out through real Redis: across hubs (processes), via the Dramatiq actor, lag handling."""

from __future__ import annotations

import asyncio
import uuid

import dramatiq
import pytest
import redis.asyncio as aioredis

from domain.errors import SubscriberLagged
from infra.broker import make_broker
from infra.pubsub import EventHub
from jobs.actors import ActorDeps, register_actors


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


async def test_actor_publishes_once_per_event_id(servers, hubs) -> None:  # type: ignore[no-untyped-def]
    namespace = f"gpucloud_actor_{uuid.uuid4().hex[:8]}"
    broker = make_broker(servers.redis_url, namespace)
    actors = register_actors(broker, ActorDeps(servers.redis_url, namespace))
    listener_client = aioredis.Redis.from_url(servers.redis_url)
    listener = EventHub(listener_client, namespace)
    await listener.start()
    await listener.wait_ready()
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        async with listener.subscribe("catalog") as stream:
            message = {"id": 7, "topic": "catalog", "name": "sku.added", "payload": {"skuId": 1}}
            actors.publish_event.send(message)
            actors.publish_event.send(message)  # a duplicate from an at-least-once relay
            first = await asyncio.wait_for(anext(stream), 10)
            assert first["id"] == 7
            await asyncio.to_thread(broker.join, "events", timeout=10_000)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(stream), 1)
        stats = await listener_client.hgetall(f"{namespace}:jobs")
        assert int(stats[b"publish_event:succeeded"]) == 2
    finally:
        worker.stop()
        broker.close()
        await listener.stop()
        keys = [k async for k in listener_client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await listener_client.delete(*keys)
        await listener_client.aclose()
