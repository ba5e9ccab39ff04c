"""Process-wide resources, made in the lifespan (never at import) and closed on shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.compute.kit import ComputeKit
from domain.compute.terminals import TerminalKit
from domain.events import DomainEvent
from domain.fleet.kit import FleetKit
from domain.identity.kit import IDENTITY_TOPIC, AuthKit, RateLimits
from domain.identity.sessions import SessionPolicy
from domain.payments.kit import MoneyKit
from gpucloud.auth import Authenticator
from gpucloud.draining import Draining
from gpucloud.live import LiveConnections, LivePolicy, users_named
from gpucloud.payments import topup_policy
from gpucloud.principal_cache import PrincipalCache
from infra.crypto.local_kms import LocalKms
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.metrics import Metrics
from infra.nodes.factory import make_compute_kit, make_fleet_kit
from infra.oidc import OidcClient, OidcConfig
from infra.passwords import Argon2Hasher, Argon2Params
from infra.payment_settings import ledger_policy
from infra.pubsub import EventHub
from infra.ratelimit import RedisRateLimiter
from infra.settings import Settings
from infra.slots import RedisSlots
from infra.stripe.factory import make_gateway
from infra.terminal_tickets import RedisTicketStore


def auth_kit(settings: Settings, limiter: RedisRateLimiter, hasher: Argon2Hasher) -> AuthKit:
    return AuthKit(
        hasher=hasher,
        limiter=limiter,
        sessions=SessionPolicy(
            idle=timedelta(minutes=settings.session_idle_minutes),
            absolute=timedelta(hours=settings.session_max_hours),
        ),
        limits=RateLimits(
            login_per_ip=settings.login_limit_per_ip,
            login_failures_per_account=settings.login_failures_per_account,
            signup_per_ip=settings.signup_limit_per_ip,
        ),
    )


def password_hasher(settings: Settings) -> Argon2Hasher:
    return Argon2Hasher(
        Argon2Params(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
    )


# An open terminal renews its slot well within this; a dead process's slots lapse after it.
TERMINAL_SLOT_LEASE = timedelta(seconds=90)
REDIS_CONNECTIONS = 64  # per API process; a command waits for a free one (timeout 10 s)
OIDC_CALLBACK_PATH = "/auth/oidc/callback"  # registered with the provider under PUBLIC_URL


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    redis: aioredis.Redis
    hub: EventHub
    metrics: Metrics
    principals: PrincipalCache
    kit: AuthKit
    # For reads: autocommit sessions that PostgreSQL keeps read-only (infra/db/engine.py).
    read_engine: AsyncEngine
    authenticator: Authenticator = field(init=False)
    oidc: OidcClient | None = field(init=False, default=None)
    money: MoneyKit = field(init=False)
    # The fleet's writes seal node keys with the key service: without one (no
    # GPUCLOUD_KMS_KEY_FILE) there is no kit, and they answer SERVICE_UNAVAILABLE.
    fleet: FleetKit | None = field(init=False, default=None)
    # Allocations reach nodes through the fleet's targets: made with the fleet's kit or not at
    # all. The API only places and stops; its node operations stay unused (the worker
    # provisions) and open nothing unless used.
    compute: ComputeKit | None = field(init=False, default=None)
    # Browser terminals: single-use tickets and open-terminal slots, shared through Redis.
    terminals: TerminalKit = field(init=False)
    terminal_slots: RedisSlots = field(init=False)
    # Live subscription sockets: slots per user across processes, wakers in this one.
    live: LiveConnections = field(init=False)
    # Open sockets to tell, and wait for, when the server stops (GracefulServer).
    draining: Draining = field(init=False)

    def __post_init__(self) -> None:
        namespace = self.settings.redis_namespace
        live = LivePolicy(
            ping_interval=timedelta(seconds=self.settings.ws_ping_interval_seconds),
            pong_timeout=timedelta(seconds=self.settings.ws_pong_timeout_seconds),
            max_per_user=self.settings.ws_max_connections_per_user,
            max_anonymous_per_ip=self.settings.ws_max_anonymous_per_ip,
        )
        self.live = LiveConnections(
            RedisSlots(self.redis, f"{namespace}:ws:user", live.lease),
            RedisSlots(self.redis, f"{namespace}:ws:ip", live.lease),
            live,
            self.metrics,
        )
        self.draining = Draining()
        self.terminal_slots = RedisSlots(
            self.redis, f"{namespace}:terminal:open", TERMINAL_SLOT_LEASE
        )
        self._stripe = make_gateway(
            self.settings.payments
        )  # no I/O: the HTTP client connects lazily
        self.money = MoneyKit(
            self._stripe, topup_policy(self.settings), ledger_policy(self.settings.payments)
        )
        if self.settings.kms_key_file:  # reads the key file now: a bad one stops the start
            kms = LocalKms(self.settings.kms_key_file)
            self.fleet = make_fleet_kit(self.settings.fleet, self.uow, kms)
            self.compute = make_compute_kit(
                self.settings.fleet, self.settings.compute, self.fleet, self.money.ledger
            )
        self.authenticator = Authenticator(
            self.kit, self.uow, self.principals, self.settings, self.metrics
        )
        self.metrics.state.principal_cache_stats = self.principals.stats
        self.terminals = TerminalKit(RedisTicketStore(self.redis, namespace),
                                     frozenset(self.authenticator.allowed_origins))  # fmt: skip
        if self.settings.oidc_enabled:  # no I/O here: discovery happens at the first sign-in
            self.oidc = OidcClient(
                OidcConfig(
                    issuer=self.settings.oidc_issuer,
                    client_id=self.settings.oidc_client_id,
                    client_secret=self.settings.oidc_client_secret,
                    redirect_uri=self.settings.public_url + OIDC_CALLBACK_PATH,
                )
            )

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, on_commit=self._committed)

    def reads(self) -> SqlUnitOfWork:
        """A unit of work for use cases that only read: one round trip per statement."""
        return SqlUnitOfWork(self.read_engine, read_only=True)

    def _committed(self, events: list[DomainEvent]) -> None:
        # This process applies its own identity changes at commit, before the relay brings
        # them back through Redis (as it does to every other process: `identity_changed`).
        if any(event.topic == IDENTITY_TOPIC for event in events):
            self.principals.invalidate()
            self.live.wake(users_named(events))

    def identity_changed(self, message: dict[str, Any] | None) -> None:
        """An identity event from any process (None: some may have been lost): drop cached
        principals, then have the named user's live sockets check their credential."""
        self.principals.invalidate()
        self.live.identity_changed(message)

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics) -> Resources:
        # No pre-ping: it cost every request three round trips (infra/db/engine.py).
        url, size = settings.database_url, settings.db_pool_size
        engine = make_engine(url, pool_size=size, pre_ping=False)
        read_engine = make_engine(url, pool_size=size, pre_ping=False, read_only=True)
        metrics.state.engine = engine
        # A bounded pool that callers wait on: thousands of websockets signing in at once
        # would otherwise each open a connection, and under load some of those connects time
        # out and the socket is dropped (bench/fanout.py).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_CONNECTIONS,
            timeout=10,
            socket_connect_timeout=2,
            socket_timeout=None,
            health_check_interval=15,
        )
        client = aioredis.Redis.from_pool(pool)
        hub = EventHub(client, settings.redis_namespace)
        await hub.start()
        principals = PrincipalCache(ttl=settings.auth_cache_seconds)
        principals.live_epoch = lambda: hub.epoch
        hasher = password_hasher(settings)
        # Make the stand-in hash for unknown accounts now, so even the first failed login
        # takes exactly as long as the others.
        await hasher.verify(None, "")
        kit = auth_kit(settings, RedisRateLimiter(client, settings.redis_namespace), hasher)
        return cls(settings, engine, client, hub, metrics, principals, kit, read_engine)

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.aclose()
        await self._stripe.aclose()
        close_ops = getattr(self.compute.ops, "aclose", None) if self.compute else None
        if close_ops is not None:
            await close_ops()
        await self.hub.stop()
        await asyncio.gather(
            self.redis.aclose(),
            self.engine.dispose(),
            self.read_engine.dispose(),
            return_exceptions=True,
        )
