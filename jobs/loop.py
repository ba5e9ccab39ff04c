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
    """Claim the rows whose work is due and work on each under its lease, here, at most
    `limit` at once. `claim` locks them SKIP LOCKED and leases them (their generation goes up)
    in its own committed transaction, and claims no more than there is room for, so two
    workers never take one row and no claimed row waits in a queue while its lease runs;
    `work(id, generation)` renews the lease while it runs and fences its outcome with the
    generation (domain/leases.py). A worker that dies mid-work only delays the row by the
    rest of the lease.

    Wake, then poll: with `listen` (infra/db/listen.py on the work channel), a committed change
    that makes a row due wakes it at once, and so does a step ending (room again); the tick is
    only the safety net (a lapsed lease, a lost notification, a retry whose time came)."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        claim: Claim,
        work: Callable[[int, int], Awaitable[object]],
        lease: timedelta,
        tick_seconds: float,
        what: str,
        listen: Listen | None = None,
        *,
        limit: int = 4,
        grace_seconds: float = 5.0,
    ) -> None:
        self._uow = uow
        self._claim = claim
        self._work = work
        self._lease = lease
        self._tick = tick_seconds
        self._what = what
        self._listen = listen
        self._limit = limit
        self._grace = grace_seconds
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        listener: Listener | None = None
        try:
            while not stop.is_set():
                listener = await self._listening(listener)
                self._wake.clear()  # a wake-up from here on means another tick
                try:
                    await self.tick()
                except Exception:
                    log.exception("loop.step_failed", loop=self._what)
                await wait_any(stop, self._wake, self._tick)
        finally:
            await self._drain()
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
        """Claim what is due, as much as there is room for, and start working on it."""
        room = self._limit - len(self._running)
        if room <= 0:
            return 0  # a step ending wakes the loop
        now = datetime.now(UTC)
        uow = self._uow()
        async with uow:
            due = await self._claim(uow, now, self._lease, room)
            await uow.commit()
        for claimed in due:
            task = asyncio.create_task(self._one(claimed))
            self._running.add(task)
            task.add_done_callback(self._ended)
        if due:
            log.info("loop.dispatched", loop=self._what, ids=[c.id for c in due])
        return len(due)

    async def _one(self, claimed: Claimed) -> None:
        try:
            await self._work(claimed.id, claimed.token)
        except Exception:  # the lease lapses and the row comes due again
            log.exception("loop.work_failed", loop=self._what, id=claimed.id)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()  # room again: claim what is due now

    async def _drain(self) -> None:
        """On stop: let running steps finish for a while, then cancel them (their leases are
        released on the way out; a step cut short is an "ensure", done again later)."""
        if not self._running:
            return
        _, pending = await asyncio.wait(self._running, timeout=self._grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


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
