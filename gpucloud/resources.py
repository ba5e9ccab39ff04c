"""Process-wide resources, made in the lifespan (never at import) and closed on shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.metrics import Metrics
from infra.pubsub import EventHub
from infra.settings import Settings


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    redis: aioredis.Redis
    hub: EventHub
    metrics: Metrics

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics) -> Resources:
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        metrics.state.engine = engine
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=2,
            socket_timeout=None,
            health_check_interval=15,
        )
        hub = EventHub(client, settings.redis_namespace)
        await hub.start()
        return cls(settings, engine, client, hub, metrics)

    async def close(self) -> None:
        await self.hub.stop()
        await asyncio.gather(self.redis.aclose(), self.engine.dispose(), return_exceptions=True)
