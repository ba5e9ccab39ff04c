"""The SQL unit of work: one connection, one transaction, events flushed to the outbox on commit.

A read-only unit of work (on the read pool, infra/db/engine.py) opens no transaction: each
statement is its own, so a one-statement read is one round trip. At the default isolation
(READ COMMITTED) a transaction gives a read no more than that: every statement takes its own
snapshot either way."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from domain.errors import Contention, ServiceUnavailable
from domain.events import DomainEvent
from domain.notifications.audit import AdminAuditNotices
from domain.ports import (
    AllocationRepository,
    ApiTokenRepository,
    AuditLog,
    IdempotencyStore,
    LedgerRepository,
    NodeRepository,
    NotificationRepository,
    PaymentRepository,
    PlacementRepository,
    SecretRepository,
    SessionRepository,
    SkuRepository,
    SshCaRepository,
    SshKeyRepository,
    StripeRecords,
    UserRepository,
)
from infra.db import outbox
from infra.db.allocations import SqlAllocationRepository
from infra.db.api_tokens import SqlApiTokenRepository
from infra.db.audit import SqlAuditLog
from infra.db.idempotency import SqlIdempotencyStore
from infra.db.ledger import SqlLedgerRepository
from infra.db.nodes import SqlNodeRepository
from infra.db.notifications import SqlNotificationRepository
from infra.db.payments import SqlPaymentRepository
from infra.db.placements import SqlPlacementRepository
from infra.db.secrets import SqlSecretRepository
from infra.db.sessions import SqlSessionRepository
from infra.db.skus import SqlSkuRepository
from infra.db.ssh_ca import SqlSshCaRepository
from infra.db.ssh_keys import SqlSshKeyRepository
from infra.db.stripe_records import SqlStripeRecords
from infra.db.users import SqlUserRepository

_LOST = (OSError, TimeoutError, InterfaceError)
# Deadlock and serialization failure: the database aborted us for a concurrent transaction.
_CONTENTION = frozenset({"40P01", "40001"})


def _contended(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _CONTENTION


def _lost(exc: BaseException) -> bool:
    """The connection went away (not a query error such as a deadlock, which callers retry)."""
    return isinstance(exc, _LOST) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


class SqlUnitOfWork:
    skus: SkuRepository
    users: UserRepository
    sessions: SessionRepository
    api_tokens: ApiTokenRepository
    audit: AuditLog
    ledger: LedgerRepository
    idempotency: IdempotencyStore
    payments: PaymentRepository
    stripe: StripeRecords
    secrets: SecretRepository
    ssh_ca: SshCaRepository
    nodes: NodeRepository
    placements: PlacementRepository
    allocations: AllocationRepository
    notifications: NotificationRepository
    ssh_keys: SshKeyRepository

    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: Callable[[list[DomainEvent]], None] | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self._engine = engine
        self._read_only = read_only
        # Told of the events of each commit, so this process can act on them at once (drop a
        # cached credential) instead of waiting for the relay to bring them back.
        self._on_commit = on_commit
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None
        self._events: list[DomainEvent] = []

    async def __aenter__(self) -> Self:
        try:
            self._conn = await self._engine.connect()
            if not self._read_only:
                self._tx = await self._conn.begin()
        except Exception as exc:
            # Any failure to connect is an outage (refused, timed out, auth while restarting).
            if isinstance(exc, (OperationalError, *_LOST)) or _lost(exc):
                raise ServiceUnavailable("database") from exc
            raise
        self._events = []
        self.skus = SqlSkuRepository(self._conn)
        self.users = SqlUserRepository(self._conn)
        self.sessions = SqlSessionRepository(self._conn)
        self.api_tokens = SqlApiTokenRepository(self._conn)
        # Administrators are told of some audit rows in the same transaction (notifications).
        self.audit = AdminAuditNotices(SqlAuditLog(self._conn), self)
        self.ledger = SqlLedgerRepository(self._conn)
        self.idempotency = SqlIdempotencyStore(self._conn)
        self.payments = SqlPaymentRepository(self._conn)
        self.stripe = SqlStripeRecords(self._conn)
        self.secrets = SqlSecretRepository(self._conn)
        self.ssh_ca = SqlSshCaRepository(self._conn)
        self.nodes = SqlNodeRepository(self._conn)
        self.placements = SqlPlacementRepository(self._conn)
        self.allocations = SqlAllocationRepository(self._conn)
        self.notifications = SqlNotificationRepository(self._conn)
        self.ssh_keys = SqlSshKeyRepository(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        outage = exc is not None and _lost(exc)
        try:
            if self._tx is not None and self._tx.is_active:
                await self._tx.rollback()
            await self._conn.close()
        except Exception:
            if not outage:  # a dead connection cannot roll back; that is not a second error
                raise
        finally:
            self._conn = self._tx = None
        if outage:
            # The connection died mid-transaction: nothing was committed, and the caller may retry.
            raise ServiceUnavailable("database") from exc
        if exc is not None and _contended(exc):
            raise Contention(str(exc.__class__.__name__)) from exc

    def record(self, event: DomainEvent) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work records no events")
        self._events.append(event)

    async def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        assert self._conn is not None and self._tx is not None, "commit outside `async with`"
        events, self._events = self._events, []
        if events:
            await outbox.append(self._conn, events)
        await self._tx.commit()
        if events and self._on_commit is not None:
            self._on_commit(events)

    async def rollback(self) -> None:
        self._events = []
        if self._tx is not None:  # a read-only unit of work has no transaction to end
            await self._tx.rollback()
