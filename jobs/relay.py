"""The outbox relay: publish committed outbox rows as jobs, then mark them sent.

At-least-once: a crash after enqueueing and before the commit re-publishes the batch, which the
actor and subscribers tolerate. Several relays may run; SKIP LOCKED keeps them off each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db import outbox
from infra.db.listen import open_listener
from infra.db.tables import OUTBOX_CHANNEL

log = structlog.get_logger(__name__)

Enqueue = Callable[[outbox.OutboxMessage], None]


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        database_url: str,
        enqueue: Enqueue,
        poll_seconds: float = 1.0,
        batch_size: int = 100,
    ) -> None:
        self._engine = engine
        self._database_url = database_url
        self._enqueue = enqueue
        self._poll = poll_seconds
        self._batch = batch_size
        self._wake = asyncio.Event()

    async def run_once(self) -> int:
        """Publish one batch; returns how many rows were published."""
        async with self._engine.begin() as conn:
            messages = await outbox.claim_unpublished(conn, self._batch)
            for message in messages:
                self._enqueue(message)
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
            await _wait_any(stop, self._wake, delay)
        await _close(listener)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()


async def _close(listener: object | None) -> None:
    if listener is not None:
        with contextlib.suppress(Exception):
            await listener.close()  # type: ignore[attr-defined]
