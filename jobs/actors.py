"""Actors: take ids or small messages, do one thing, and are safe to run twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import redis.asyncio as aioredis
import structlog

from domain.compute.engine import advance
from domain.compute.kit import ComputeKit
from domain.fleet.checks import check_node
from domain.fleet.kit import FleetKit
from infra.pubsub import publish

log = structlog.get_logger(__name__)

PUBLISH_EVENT = "publish_event"
CHECK_NODE = "check_node"
ADVANCE_ALLOCATION = "advance_allocation"
# A marker per delivered outbox id lets a redelivered message skip the publish; subscribers also
# drop duplicate ids, so the rare double publish (crash after publish, before mark) is harmless.
_DELIVERED_TTL_SECONDS = 24 * 3600


@dataclass
class ActorDeps:
    """Async clients are made lazily inside the worker's event-loop thread, not at import."""

    redis_url: str
    namespace: str
    # Builds the fleet kit (engine, KMS, SSH connector) on the actors' event loop at first use.
    fleet_factory: Callable[[], FleetKit] | None = None
    compute_factory: Callable[[FleetKit], ComputeKit] | None = None
    _redis: aioredis.Redis | None = field(default=None, init=False)
    _fleet: FleetKit | None = field(default=None, init=False)
    _compute: ComputeKit | None = field(default=None, init=False)

    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.redis_url)
        return self._redis

    def fleet(self) -> FleetKit:
        if self._fleet is None:
            if self.fleet_factory is None:
                raise RuntimeError("this worker has no fleet kit (GPUCLOUD_KMS_KEY_FILE unset)")
            self._fleet = self.fleet_factory()
        return self._fleet

    def compute(self) -> ComputeKit:
        if self._compute is None:
            if self.compute_factory is None:
                raise RuntimeError("this worker has no compute kit (GPUCLOUD_KMS_KEY_FILE unset)")
            self._compute = self.compute_factory(self.fleet())
        return self._compute


@dataclass(frozen=True)
class Actors:
    publish_event: dramatiq.Actor[Any, Any]
    check_node: dramatiq.Actor[Any, Any]
    advance_allocation: dramatiq.Actor[Any, Any]


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

    async def check(node_id: int) -> None:
        # Safe to run twice: it reads the node afresh and changes it only through `transition`.
        node = await check_node(deps.fleet(), node_id)
        if node is not None:
            log.info("fleet.node_checked", node_id=node_id, state=str(node.state),
                     health=str(node.health), version=node.version)  # fmt: skip

    async def advance_one(allocation_id: int) -> None:
        # Safe to run twice: a step is stored only if the row is still as it was read.
        allocation = await advance(deps.compute(), allocation_id)
        if allocation is not None:
            log.info("engine.advanced", allocation_id=allocation_id,
                     state=str(allocation.state), version=allocation.version)  # fmt: skip

    return Actors(
        advance_allocation=dramatiq.actor(
            actor_name=ADVANCE_ALLOCATION,
            broker=broker,
            queue_name="allocations",
            # A node that fails is an outcome the engine records and retries itself; an error
            # here is ours (the database away): retry a little, the lease brings it back anyway.
            max_retries=3,
            min_backoff=1_000,
            max_backoff=30_000,
            time_limit=10 * 60 * 1000,
        )(advance_one),
        check_node=dramatiq.actor(
            actor_name=CHECK_NODE,
            broker=broker,
            queue_name="fleet",
            # Failures to reach the node are outcomes, not errors; an error here is ours (the
            # database away): retry a little, the lease brings the node back anyway.
            max_retries=3,
            min_backoff=1_000,
            max_backoff=30_000,
            time_limit=10 * 60 * 1000,
        )(check),
        publish_event=dramatiq.actor(
            actor_name=PUBLISH_EVENT,
            broker=broker,
            queue_name="events",
            max_retries=20,
            min_backoff=200,
            max_backoff=30_000,
        )(publish_event),
    )
