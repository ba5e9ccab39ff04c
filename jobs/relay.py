"""The outbox relay: publish committed outbox rows to Redis pub/sub, then mark them sent.

At-least-once: a crash after publishing and before the commit re-publishes the batch, which
subscribers tolerate (they drop event ids they have seen; notification pokes only say "read
again"). Several relays may run; SKIP LOCKED keeps them off each other's rows. It publishes
itself rather than through a Dramatiq job: the job's consumer polls with a back-off of up to a
second when idle, which was most of an event's delay from commit to subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.broker import JOB_STATS_KEY
from infra.db import outbox
from infra.db.listen import open_listener
from infra.db.tables import OUTBOX_CHANNEL
from infra.pubsub import publish
from jobs.loop import wait_any

log = structlog.get_logger(__name__)

RELAY = "outbox_relay"
Publish = Callable[[outbox.OutboxMessage], Awaitable[object]]


class EventPublisher:
    """Publishes outbox rows to every API process (Redis pub/sub) and counts them with the
    jobs' statistics, so `/metrics` shows `gpucloud_jobs_total{actor="outbox_relay"}`."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._stats = f"{namespace}:{JOB_STATS_KEY}"

    async def publish(self, message: outbox.OutboxMessage) -> int:
        receivers = await publish(self._client, self._namespace, message.topic, {
            "id": message.id, "topic": message.topic, "name": message.name,
            "payload": message.payload})  # fmt: skip
        with contextlib.suppress(RedisError):  # statistics must never hold an event back
            await self._client.hincrby(self._stats, f"{RELAY}:published", 1)
        log.debug("event.published", event_id=message.id, topic=message.topic,
                  name=message.name, api_processes=receivers)  # fmt: skip
        return receivers


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        database_url: str,
        publish: Publish,
        poll_seconds: float = 1.0,
        batch_size: int = 100,
    ) -> None:
        self._engine = engine
        self._database_url = database_url
        self._publish = publish
        self._poll = poll_seconds
        self._batch = batch_size
        self._wake = asyncio.Event()

    async def run_once(self) -> int:
        """Publish one batch; returns how many rows were published."""
        async with self._engine.begin() as conn:
            messages = await outbox.claim_unpublished(conn, self._batch)
            for message in messages:  # in order: one topic's events arrive as committed
                await self._publish(message)
            if messages:
                await outbox.mark_published(conn, [m.id for m in messages])
        if messages:
            log.info("outbox.published", count=len(messages), last_id=messages[-1].id)
        return len(messages)

    async def run(self, stop: asyncio.Event) -> None:
        listener = None
        delay = self._poll
        while not stop.is_set():
            try:
                if listener is None or listener.is_closed():
                    listener = await open_listener(self._database_url, OUTBOX_CHANNEL, self._wake)
                self._wake.clear()
                if await self.run_once() == self._batch:
                    continue  # more waiting: do not sleep
                delay = self._poll
            except (OSError, OperationalError, DBAPIError, RedisError) as exc:
                # PostgreSQL or Redis is down: keep the rows, back off, and recover by ourselves.
                log.warning("outbox.relay_failed", error=str(exc), retry_in=delay)
                await _close(listener)
                listener = None
                delay = min(delay * 2, 30.0)
            except Exception:
                log.exception("outbox.relay_error", retry_in=delay)
                delay = min(delay * 2, 30.0)
            await wait_any(stop, self._wake, delay)
        await _close(listener)


async def _close(listener: object | None) -> None:
    if listener is not None:
        with contextlib.suppress(Exception):
            await listener.close()  # type: ignore[attr-defined]
