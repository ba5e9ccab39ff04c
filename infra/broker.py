"""The Dramatiq broker on Redis, built at start-up with the middleware every process needs."""

from __future__ import annotations

import contextlib
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, Middleware

JOB_STATS_KEY = "jobs"


class JobStats(Middleware):
    """Counts finished jobs per actor and outcome in one Redis hash, so `/metrics` on any API
    process can report job counts for the whole fleet of workers."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._client = client
        self._key = f"{namespace}:{JOB_STATS_KEY}"

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        outcome = "failed" if exception is not None else "succeeded"
        with contextlib.suppress(redis.RedisError):  # statistics must never fail a job
            self._client.hincrby(self._key, f"{message.actor_name}:{outcome}", 1)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        with contextlib.suppress(redis.RedisError):
            self._client.hincrby(self._key, f"{message.actor_name}:skipped", 1)


def make_broker(redis_url: str, namespace: str) -> RedisBroker:
    broker = RedisBroker(url=redis_url, namespace=f"{namespace}:dramatiq")  # type: ignore[no-untyped-call]
    broker.add_middleware(AsyncIO())
    broker.add_middleware(JobStats(broker.client, namespace))
    return broker
