"""The SQL unit of work: one connection, one transaction, events flushed to the outbox on commit."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from domain.errors import ServiceUnavailable
from domain.events import DomainEvent
from domain.ports import SkuRepository
from infra.db import outbox
from infra.db.skus import SqlSkuRepository


class SqlUnitOfWork:
    skus: SkuRepository

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None
        self._events: list[DomainEvent] = []

    async def __aenter__(self) -> Self:
        try:
            self._conn = await self._engine.connect()
            self._tx = await self._conn.begin()
        except (OSError, TimeoutError, OperationalError, InterfaceError) as exc:
            raise ServiceUnavailable("database") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise ServiceUnavailable("database") from exc
            raise
        self._events = []
        self.skus = SqlSkuRepository(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None and self._tx is not None
        try:
            if self._tx.is_active:
                await self._tx.rollback()
        finally:
            await self._conn.close()
            self._conn = self._tx = None

    def record(self, event: DomainEvent) -> None:
        self._events.append(event)

    async def commit(self) -> None:
        assert self._conn is not None and self._tx is not None, "commit outside `async with`"
        if self._events:
            await outbox.append(self._conn, self._events)
            self._events = []
        await self._tx.commit()

    async def rollback(self) -> None:
        assert self._tx is not None
        self._events = []
        await self._tx.rollback()
