"""Run a whole transaction again when the database aborted it for contention; and the one
doubling back-off that retries of node work (probes, provisioning) share."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from domain.errors import Contention

T = TypeVar("T")


def doubling(base: timedelta, times: int, cap: timedelta) -> timedelta:
    """base, 2 x base, 4 x base ... for the 1st, 2nd, 3rd ... time, at most `cap`."""
    return min(base * (1 << min(max(times - 1, 0), 20)), cap)


async def retrying(attempt: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
    """`attempt` must open and commit its own unit of work, so each try starts afresh."""
    for n in range(1, attempts + 1):
        try:
            return await attempt()
        except Contention:
            if n == attempts:
                raise
            # Jittered backoff so the transactions that collided do not collide again.
            await asyncio.sleep(random.uniform(0, 0.005 * 2**n))  # noqa: S311  (jitter, not a secret)
    raise AssertionError("unreachable")  # pragma: no cover
