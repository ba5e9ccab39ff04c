"""The worker process: the engine's and the fleet's Dispatchers (they claim due steps with a
lease and send them to the actors), the outbox relay, metering and the reconciler on the main
event loop; Dramatiq actors, which work each claimed step under its lease, in threads."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import dramatiq
import redis.asyncio as aioredis
import structlog

from domain.fleet.kit import FleetKit
from infra.broker import make_broker
from infra.crypto.local_kms import LocalKms
from infra.db.engine import make_engine
from infra.db.leases import WORK_CHANNEL
from infra.db.listen import open_listener
from infra.db.uow import SqlUnitOfWork
from infra.nodes.factory import allocation_policy, health_policy, make_compute_kit, make_fleet_kit
from infra.payment_settings import ledger_policy
from infra.settings import Settings
from infra.stripe.factory import make_gateway
from jobs.actors import ActorDeps, register_actors
from jobs.compute import MeteringTicker, ReconcileTicker, claim_allocations
from jobs.drain import DrainTicker
from jobs.fleet import claim_nodes
from jobs.loop import Dispatcher, Listener
from jobs.money import MoneyTicker
from jobs.relay import EventPublisher, OutboxRelay

log = structlog.get_logger(__name__)


def fleet_factory(settings: Settings) -> Callable[[], FleetKit] | None:
    """The fleet kit for the actors, made on their event loop at first use (the engine must
    belong to the loop that uses it). None without a KMS: node credentials cannot be opened."""
    if not settings.kms_key_file:
        return None

    def make() -> FleetKit:
        engine = make_engine(settings.database_url, pool_size=settings.worker_threads)
        return make_fleet_kit(settings.fleet, lambda: SqlUnitOfWork(engine),
                              LocalKms(settings.kms_key_file))  # fmt: skip

    return make


def run_worker(settings: Settings) -> int:
    broker = make_broker(settings.redis_url, settings.redis_namespace)
    fleet = fleet_factory(settings)
    compute = (None if fleet is None else
               lambda kit: make_compute_kit(settings.fleet, settings.compute, kit,
                                            ledger_policy(settings.payments)))  # fmt: skip
    actors = register_actors(broker, ActorDeps(fleet_factory=fleet, compute_factory=compute))
    # An idle consumer asks Redis again after at most `worker_poll_ms` (Dramatiq's default is a
    # second): a step the Dispatcher was woken for then starts within that.
    worker = dramatiq.Worker(
        broker, worker_threads=settings.worker_threads, worker_timeout=settings.worker_poll_ms
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        engine = make_engine(settings.database_url, pool_size=4)
        events = aioredis.Redis.from_url(settings.redis_url)
        publisher = EventPublisher(events, settings.redis_namespace)
        relay = OutboxRelay(engine, settings.database_url, publisher.publish,
                            settings.outbox_poll_seconds)  # fmt: skip
        gateway = make_gateway(settings.payments)
        ticker = MoneyTicker(lambda: SqlUnitOfWork(engine), gateway, settings.payments)
        loops = [relay.run(stop), ticker.run(stop)]
        pools: list[object] = []  # node connection pools to close at the end
        if fleet is not None:

            def uow() -> SqlUnitOfWork:
                return SqlUnitOfWork(engine)

            def listen(wake: asyncio.Event) -> Awaitable[Listener]:
                # Committed changes that make work due wake the dispatchers (migration 0010).
                return open_listener(settings.database_url, WORK_CHANNEL, wake)

            fleet_kit = make_fleet_kit(settings.fleet, uow, LocalKms(settings.kms_key_file))
            billing = make_compute_kit(
                settings.fleet, settings.compute, fleet_kit, ledger_policy(settings.payments)
            )
            loops.append(
                Dispatcher(
                    uow,
                    claim_nodes,
                    actors.check_node.send,
                    health_policy(settings.fleet).lease,
                    settings.fleet.tick_seconds,
                    "fleet",
                    listen,
                ).run(stop)
            )
            loops.append(
                Dispatcher(
                    uow,
                    claim_allocations,
                    actors.advance_allocation.send,
                    allocation_policy(settings.compute).lease,
                    settings.compute.engine_tick_seconds,
                    "engine",
                    listen,
                ).run(stop)
            )
            loops.append(MeteringTicker(billing, settings.compute.metering_tick_seconds).run(stop))
            loops.append(ReconcileTicker(billing, settings.compute.reconcile_seconds).run(stop))
            loops.append(DrainTicker(billing, settings.fleet.tick_seconds).run(stop))
            pools.append(billing.ops)
        else:
            log.warning("worker.fleet_disabled", reason="GPUCLOUD_KMS_KEY_FILE is not set")
        log.info(
            "worker.started",
            threads=settings.worker_threads,
            queues=sorted(broker.get_declared_queues()),
        )
        try:
            await asyncio.gather(*loops)
        finally:
            for pool in pools:
                close = getattr(pool, "aclose", None)
                if close is not None:
                    await close()
            await gateway.aclose()
            await events.aclose()
            await engine.dispose()

    worker.start()
    try:
        asyncio.run(main())
    finally:
        worker.stop(timeout=10_000)
        broker.close()
        log.info("worker.stopped")
    return 0
