"""Browser sessions: how long they live, idle and in all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(hours=2)
    absolute: timedelta = timedelta(days=7)
    # Last-seen is written at most this often, so a busy session does not write on every request.
    touch_every: timedelta = timedelta(minutes=1)


@dataclass(frozen=True)
class Session:
    id: int
    user_id: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime  # the absolute expiry, fixed at login
    revoked_at: datetime | None

    def valid_until(self, policy: SessionPolicy) -> datetime:
        return min(self.expires_at, self.last_seen_at + policy.idle)

    def live(self, now: datetime, policy: SessionPolicy) -> bool:
        return self.revoked_at is None and now < self.valid_until(policy)
