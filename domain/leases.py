"""Leases that hold, and fencing: one design for every state machine's background work
(allocations and nodes now; volumes and queued work next).

A worker that claims a row gets a lease on it: the row's generation (`token`, which only goes
up) and an expiry. While it works it renews the lease by heartbeat, so a step slower than the
lease is still claimed once; a worker that dies stops renewing and the row is claimable again
when the lease ends. Every write of the outcome is made only if the row still carries the
token (a superseded worker's outcome is discarded), and every command sent to a node carries
the token as a fencing token, which the node refuses when it has seen a newer one.

Something that changes what the row's work is (a user's stop) revokes the lease: the
generation goes up at once, the current holder is superseded and the row is claimable now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

# Renew this many times per lease: two renewals may fail (a database blip) before it lapses.
BEATS_PER_LEASE = 3


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row claimed for work: its id and the lease generation the work carries."""

    id: int
    token: int


class Leases(Protocol):
    """The lease columns of one table's rows. Each call runs in the caller's transaction."""

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> Sequence[Claimed]:
        """Rows whose work is due by `now` and that nobody holds, oldest due first, locked
        SKIP LOCKED and leased for `lease` (their generation goes up): two workers never
        claim one row, and a claimed row is not due again until its lease ends."""
        ...

    async def take_lease(self, row_id: int, seconds: float) -> int | None:
        """Lease this row if nobody holds it, due or not; its new generation, else None."""
        ...

    async def renew_lease(self, row_id: int, token: int, seconds: float) -> bool:
        """Extend the lease to `seconds` from now if the row is still at generation `token`."""
        ...

    async def release_lease(self, row_id: int, token: int) -> bool:
        """End the lease now if the row is still at `token` (the step is done)."""
        ...

    async def revoke_lease(self, row_id: int) -> int:
        """Supersede whoever holds the row: a new generation, no holder. Returns it."""
        ...


class _Transaction(Protocol):
    """The part of a unit of work the lease calls need (domain/ports.py's UnitOfWork)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


U = TypeVar("U", bound=_Transaction)
T = TypeVar("T")


async def under_lease(
    uow: Callable[[], U],
    rows: Callable[[U], Leases],
    row_id: int,
    token: int | None,
    lease: timedelta,
    what: str,
    work: Callable[[int], Awaitable[T]],
) -> T | None:
    """Run `work(generation)` on the row under its lease: `token` is the lease a claim gave
    (None: take it now, if nobody holds it). The lease is renewed by heartbeat while `work`
    runs and released after it. None, and no work, when the lease is not ours: revoked,
    claimed anew, or held by another worker. `work` fences its own writes and node commands
    with the generation it is given."""
    seconds = lease.total_seconds()
    tx = uow()
    async with tx:
        if token is None:
            held = await rows(tx).take_lease(row_id, seconds)
        elif await rows(tx).renew_lease(row_id, token, seconds):
            held = token  # still ours: not revoked, not lapsed and claimed anew
        else:
            held = None
        await tx.commit()
    if held is None:
        log.info("%s: its lease is not ours (token %s); nothing done", what, token)
        return None
    generation = held

    async def renew() -> bool:
        tx = uow()
        async with tx:
            renewed = await rows(tx).renew_lease(row_id, generation, seconds)
            await tx.commit()
            return renewed

    try:
        async with heartbeat(renew, lease, what):
            return await work(generation)
    finally:
        await _release(uow, rows, row_id, generation, what)


async def _release(
    uow: Callable[[], U], rows: Callable[[U], Leases], row_id: int, token: int, what: str
) -> None:
    """End the lease now, so a row still due is claimable at once (one not released lapses)."""
    try:
        tx = uow()
        async with tx:
            await rows(tx).release_lease(row_id, token)
            await tx.commit()
    except Exception:
        log.warning("%s: lease not released", what, exc_info=True)


class Holding:
    """What the heartbeat learned: whether the lease was lost while the step ran."""

    def __init__(self) -> None:
        self.lost = False


@contextlib.asynccontextmanager
async def heartbeat(
    renew: Callable[[], Awaitable[bool]], lease: timedelta, what: str
) -> AsyncIterator[Holding]:
    """Renew the lease every third of it while the body runs. A renewal refused (the row was
    revoked or claimed anew) marks the holding lost and stops; one that fails (the database
    away) is tried again at the next beat, and the lease lapses if they keep failing."""
    holding = Holding()

    async def beat() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / BEATS_PER_LEASE)
            try:
                if not await renew():
                    holding.lost = True
                    log.warning("lease lost while working on %s: superseded", what)
                    return
            except Exception:
                log.warning("lease renewal failed for %s", what, exc_info=True)

    task = asyncio.create_task(beat())
    try:
        yield holding
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
