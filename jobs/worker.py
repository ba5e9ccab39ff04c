"""The worker process: Dramatiq actors in threads, the outbox relay on the main event loop."""

from __future__ import annotations

import asyncio
import signal

import dramatiq
import structlog

from infra.broker import make_broker
from infra.db.engine import make_engine
from infra.db.outbox import OutboxMessage
from infra.db.uow import SqlUnitOfWork
from infra.settings import Settings
from infra.stripe.factory import make_gateway
from jobs.actors import ActorDeps, register_actors
from jobs.money import MoneyTicker
from jobs.relay import OutboxRelay

log = structlog.get_logger(__name__)


def run_worker(settings: Settings) -> int:
    broker = make_broker(settings.redis_url, settings.redis_namespace)
    actors = register_actors(broker, ActorDeps(settings.redis_url, settings.redis_namespace))
    worker = dramatiq.Worker(broker, worker_threads=settings.worker_threads)

    def enqueue(message: OutboxMessage) -> None:
        actors.publish_event.send(
            {
                "id": message.id,
                "topic": message.topic,
                "name": message.name,
                "payload": message.payload,
            }
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        engine = make_engine(settings.database_url, pool_size=4)
        relay = OutboxRelay(engine, settings.database_url, enqueue, settings.outbox_poll_seconds)
        gateway = make_gateway(settings.payments)
        ticker = MoneyTicker(lambda: SqlUnitOfWork(engine), gateway, settings.payments)
        log.info(
            "worker.started",
            threads=settings.worker_threads,
            queues=sorted(broker.get_declared_queues()),
        )
        try:
            await asyncio.gather(relay.run(stop), ticker.run(stop))
        finally:
            await gateway.aclose()
            await engine.dispose()

    worker.start()
    try:
        asyncio.run(main())
    finally:
        worker.stop(timeout=10_000)
        broker.close()
        log.info("worker.stopped")
    return 0
