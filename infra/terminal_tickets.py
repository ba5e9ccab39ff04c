"""Terminal tickets in Redis, shared by every API process.

The secret is 32 random bytes (url-safe); Redis holds only its SHA-256, so a look at
Redis (or its replication stream) gives nobody a usable ticket. `take` is one GETDEL: of two
websockets presenting the same ticket at once, exactly one gets it. The key outlives the
ticket by `grace`, so a late ticket is refused as TICKET_EXPIRED rather than unknown.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import orjson
import redis.asyncio as aioredis

from domain.compute.terminals import TerminalTicket


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class RedisTicketStore:
    """The `TicketStore` port. `grace` is how long an expired ticket is still recognised."""

    def __init__(self, client: aioredis.Redis, namespace: str,
                 grace: timedelta = timedelta(seconds=60)) -> None:  # fmt: skip
        self._client = client
        self._prefix = f"{namespace}:terminal:ticket:"
        self._grace = grace

    async def put(self, ticket: TerminalTicket) -> str:
        secret = secrets.token_urlsafe(32)
        body = orjson.dumps({"user_id": ticket.user_id, "allocation_id": ticket.allocation_id,
                             "origin": ticket.origin,
                             "expires_at": ticket.expires_at.isoformat(),
                             "session_id": ticket.session_id,
                             "token_id": ticket.token_id})  # fmt: skip
        left = ticket.expires_at - datetime.now(UTC) + self._grace
        await self._client.set(self._prefix + _digest(secret), body,
                               px=max(int(left.total_seconds() * 1000), 1))  # fmt: skip
        return secret

    async def take(self, secret: str) -> TerminalTicket | None:
        if not secret or len(secret) > 128:
            return None
        raw = await self._client.getdel(self._prefix + _digest(secret))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return TerminalTicket(int(data["user_id"]), int(data["allocation_id"]),
                              str(data["origin"]), datetime.fromisoformat(data["expires_at"]),
                              data.get("session_id"), data.get("token_id"))  # fmt: skip
