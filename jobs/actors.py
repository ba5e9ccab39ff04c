"""Actors: take ids or small messages, do one thing, and are safe to run twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dramatiq
import redis.asyncio as aioredis
import structlog

from infra.pubsub import publish

log = structlog.get_logger(__name__)

PUBLISH_EVENT = "publish_event"
# A marker per delivered outbox id lets a redelivered message skip the publish; subscribers also
# drop duplicate ids, so the rare double publish (crash after publish, before mark) is harmless.
_DELIVERED_TTL_SECONDS = 24 * 3600


@dataclass
class ActorDeps:
    """Async clients are made lazily inside the worker's event-loop thread, not at import."""

    redis_url: str
    namespace: str
    _redis: aioredis.Redis | None = field(default=None, init=False)

    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.redis_url)
        return self._redis


@dataclass(frozen=True)
class Actors:
    publish_event: dramatiq.Actor[Any, Any]


def register_actors(broker: dramatiq.Broker, deps: ActorDeps) -> Actors:
    async def publish_event(message: dict[str, Any]) -> None:
        client = deps.redis()
        marker = f"{deps.namespace}:delivered:{message['id']}"
        if await client.exists(marker):
            return
        receivers = await publish(client, deps.namespace, message["topic"], message)
        await client.set(marker, 1, ex=_DELIVERED_TTL_SECONDS)
        log.info("event.published", event_id=message["id"], topic=message["topic"],
                 name=message["name"], api_processes=receivers)  # fmt: skip

    return Actors(
        publish_event=dramatiq.actor(
            actor_name=PUBLISH_EVENT,
            broker=broker,
            queue_name="events",
            max_retries=20,
            min_backoff=200,
            max_backoff=30_000,
        )(publish_event),
    )
