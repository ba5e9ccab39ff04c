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
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from domain.identity.principal import Principal

log = structlog.get_logger(__name__)


@dataclass
class PrincipalCache:
    ttl: float = 5.0
    maxsize: int = 10_000
    live_epoch: object = None  # callable returning the event stream's epoch, or None if down
    generation: int = 0
    stats: dict[str, int] = field(default_factory=lambda: {"hit": 0, "miss": 0})
    _entries: OrderedDict[bytes, tuple[Principal, float, object]] = field(
        default_factory=OrderedDict
    )

    def _epoch(self) -> object:
        return None if self.live_epoch is None else self.live_epoch()  # type: ignore[operator]

    def get(self, key: bytes) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic() or entry[2] != self._epoch():
            if entry is not None:
                del self._entries[key]
            self.stats["miss"] += 1
            return None
        self.stats["hit"] += 1
        return entry[0]

    def put(self, key: bytes, principal: Principal, generation: int) -> None:
        epoch = self._epoch()
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
