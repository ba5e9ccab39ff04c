"""The worker's periodic loops share one shape: do a step, wait, again, until asked to stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import structlog

from domain.ports import UnitOfWork

log = structlog.get_logger(__name__)

# Claims due rows inside the given unit of work: (uow, now, lease until) -> their ids.
Claim = Callable[[UnitOfWork, datetime, datetime], Awaitable[Sequence[int]]]


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
    """Every tick, claim the rows whose work is due and send each id to an actor. `claim` locks
    them SKIP LOCKED and pushes them a lease ahead in its own committed transaction, so two
    workers never take one row, and a worker that dies mid-work only delays it by the lease:
    the row comes due again and another worker takes it."""

    def __init__(self, uow: Callable[[], UnitOfWork], claim: Claim,
                 send: Callable[[int], object], lease: timedelta, tick_seconds: float,
                 what: str) -> None:  # fmt: skip
        self._uow = uow
        self._claim = claim
        self._send = send
        self._lease = lease
        self._tick = tick_seconds
        self._what = what

    async def run(self, stop: asyncio.Event) -> None:
        await every(stop, self._tick, self.tick, self._what)

    async def tick(self) -> int:
        now = datetime.now(UTC)
        uow = self._uow()
        async with uow:
            due = await self._claim(uow, now, now + self._lease)
            await uow.commit()
        for row_id in due:
            self._send(row_id)
        if due:
            log.info("loop.dispatched", loop=self._what, ids=list(due))
        return len(due)
