"""A per-process cache of authenticated principals, so a request with a known credential costs
no database round trip.

Correctness rests on three things. Every change that can end a credential (logout, token
revocation, suspension, role or password change) emits an identity event: the process that
made the change applies it at once, on commit, and every other process through the same Redis
stream that feeds subscriptions. While that stream is not live, nothing is cached. And no
entry outlives `ttl` or the credential's own expiry (idle timeout included), which bounds the
damage of a lost event.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from domain.identity.principal import Principal


@dataclass
class PrincipalCache:
    ttl: float = 5.0
    maxsize: int = 10_000
    # The event stream's epoch, or None while it is down (then nothing is cached).
    live_epoch: Callable[[], int | None] = lambda: None
    generation: int = 0
    stats: dict[str, int] = field(default_factory=lambda: {"hit": 0, "miss": 0})
    _entries: OrderedDict[bytes, tuple[Principal, float, int]] = field(default_factory=OrderedDict)

    def get(self, key: bytes) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic() or entry[2] != self.live_epoch():
            if entry is not None:
                del self._entries[key]
            self.stats["miss"] += 1
            return None
        self.stats["hit"] += 1
        return entry[0]

    def put(self, key: bytes, principal: Principal, generation: int) -> None:
        epoch = self.live_epoch()
        if epoch is None or generation != self.generation or self.ttl <= 0:
            return  # an identity change arrived while we looked it up: do not keep it
        deadline = time.monotonic() + self.ttl
        if principal.valid_until is not None:
            left = (principal.valid_until - datetime.now(UTC)).total_seconds()
            deadline = min(deadline, time.monotonic() + left)
        self._entries[key] = (principal, deadline, epoch)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()
