"""A broadcast event's selection is executed once for every subscriber asking the same document
(resolvers/broadcast.py), through the real schema, event hub (Redis) and database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from domain.catalog.services import CATALOG_TOPIC, add_sku
from domain.catalog.sku import SkuSpec
from domain.identity.principal import Principal, PrincipalKind
from domain.identity.scopes import ROLE_SCOPES, Role
from infra.pubsub import EventHub
from resolvers.loaders import make_loaders
from resolvers.root import build_schema
from resolvers.shared_reads import make_shared_reads
from schema.context import AppContext

SAME = "subscription { catalogChanged { kind sku { name gpuModel } } }"
OTHER = "subscription { catalogChanged { kind } }"


@pytest.fixture
async def hub(servers: Any, redis_namespace: str) -> AsyncIterator[EventHub]:
    client = aioredis.Redis.from_url(servers.redis_url)
    made = EventHub(client, redis_namespace)
    await made.start()
    await made.wait_ready()
    yield made
    await made.stop()
    await client.aclose()


async def test_one_execution_per_document_and_event(uow: Any, engine: Any, hub: EventHub,
                                                    monkeypatch: Any) -> None:  # fmt: skip
    executed: list[str] = []
    original = StrawberryGraphQLCoreExecutionContext.execute_operation

    def counting(self: Any, serially: Any = None) -> Any:
        if self.operation.operation.value == "subscription":
            executed.append(self.operation.selection_set.selections[0].name.value)
        return original(self, serially)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_operation", counting)
    schema = build_schema()
    shared = make_shared_reads(uow)
    user = Principal(PrincipalKind.SESSION, 1, Role.USER, ROLE_SCOPES[Role.USER], session_id=1)

    async def subscriber(query: str) -> Any:
        context = AppContext("test", uow, hub, make_loaders(uow), shared=shared, principal=user)
        stream = await schema.subscribe(query, context_value=context)
        return stream

    streams = [await subscriber(SAME) for _ in range(5)] + [await subscriber(OTHER)]
    firsts = [asyncio.ensure_future(anext(stream)) for stream in streams]
    await asyncio.sleep(0.3)  # every subscription is listening
    await add_sku(uow(), SkuSpec.create(
        name="broadcast", gpu_model="H100", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=100, currency="USD"))  # fmt: skip
    async with engine.begin() as conn:  # what the worker's relay does: publish the outbox rows
        rows = (await conn.execute(text(
            "SELECT id, topic, name, payload FROM outbox WHERE published_at IS NULL "
            "AND topic = :topic ORDER BY id"), {"topic": CATALOG_TOPIC})).all()  # fmt: skip
    for row in rows:
        await hub.publish(row.topic, {"id": row.id, "topic": row.topic, "name": row.name,
                                      "payload": row.payload})  # fmt: skip
    results = await asyncio.wait_for(asyncio.gather(*firsts), 10)
    for stream in streams:
        await stream.aclose()

    datas = [r.data["catalogChanged"] for r in results]
    assert all(d == {"kind": "ADDED", "sku": {"name": "broadcast", "gpuModel": "H100"}}
               for d in datas[:5])  # fmt: skip
    assert datas[5] == {"kind": "ADDED"}
    assert executed == ["catalogChanged", "catalogChanged"]  # once per document, not per socket
