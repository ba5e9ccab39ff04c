"""The worker's periodic loops share one shape: do a step, wait, again, until asked to stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from domain.leases import Claimed
from domain.ports import UnitOfWork

log = structlog.get_logger(__name__)

# Claims due rows inside the given unit of work: (uow, now, lease, at most) -> rows and leases.
Claim = Callable[[UnitOfWork, datetime, timedelta, int], Awaitable[Sequence[Claimed]]]


class Listener(Protocol):
    """An open LISTEN connection (asyncpg's)."""

    def is_closed(self) -> bool: ...

    async def close(self) -> None: ...


# Opens a listener that sets the event on every notification.
Listen = Callable[[asyncio.Event], Awaitable[Listener]]


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def every(stop: asyncio.Event, seconds: float, step: Callable[[], Awaitable[object]],
                what: str, *, first: bool = True) -> None:  # fmt: skip
    """Run `step` every `seconds` until `stop` is set. A failing step is logged and the loop
    goes on: one bad tick must not end it. With `first` False, wait a period before the first."""
    if not first and await _stopped_within(stop, seconds):
        return
    while not stop.is_set():
        try:
            await step()
        except Exception:
            log.exception("loop.step_failed", loop=what)
        if await _stopped_within(stop, seconds):
            return


class Dispatcher:
    """Claim the rows whose work is due and send each, with its lease generation, to the
    Dramatiq actor that works on it (jobs/actors.py). `claim` locks them SKIP LOCKED and leases
    them (their generation goes up) in its own committed transaction, at most `batch` a claim,
    so two workers never take one row; the actor renews the lease while it works and fences
    its outcome with the generation (domain/leases.py), so a message that waited past its
    lease, or was delivered twice, changes nothing. A worker that dies mid-work only delays
    the row by the rest of the lease.

    Wake, then poll: with `listen` (infra/db/listen.py on the work channel), a committed change
    that makes a row due (a new allocation, a stop, a lease released with work left) wakes it
    at once; a full batch claims again at once; the tick is only the safety net (a lapsed
    lease, a lost notification, a retry whose time came)."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        claim: Claim,
        send: Callable[[int, int], object],
        lease: timedelta,
        tick_seconds: float,
        what: str,
        listen: Listen | None = None,
        *,
        batch: int = 100,
    ) -> None:
        self._uow = uow
        self._claim = claim
        self._send = send
        self._lease = lease
        self._tick = tick_seconds
        self._what = what
        self._listen = listen
        self._batch = batch
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        listener: Listener | None = None
        try:
            while not stop.is_set():
                listener = await self._listening(listener)
                self._wake.clear()  # a wake-up from here on means another tick
                try:
                    if await self.tick() == self._batch:
                        continue  # more may be due: claim again now
                except Exception:
                    log.exception("loop.step_failed", loop=self._what)
                await wait_any(stop, self._wake, self._tick)
        finally:
            await _close(listener)

    async def _listening(self, listener: Listener | None) -> Listener | None:
        """The open listener; a lost one is reopened (meanwhile the tick polls)."""
        if self._listen is None or (listener is not None and not listener.is_closed()):
            return listener
        await _close(listener)
        try:
            return await self._listen(self._wake)
        except Exception as exc:
            log.warning("loop.listen_failed", loop=self._what, error=str(exc))
            return None

    async def tick(self) -> int:
        """Claim what is due (a batch at most) and send each to its actor."""
        now = datetime.now(UTC)
        uow = self._uow()
        async with uow:
            due = await self._claim(uow, now, self._lease, self._batch)
            await uow.commit()
        for claimed in due:
            self._send(claimed.id, claimed.token)
        if due:
            log.info("loop.dispatched", loop=self._what, ids=[c.id for c in due])
        return len(due)


async def wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    """Return when `stop` or `wake` is set, or after `timeout` seconds."""
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()


async def _close(listener: Listener | None) -> None:
    if listener is not None:
        with suppress(Exception):
            await listener.close()
