"""Terminal tickets and open-terminal slots in Redis, shared by every API process.

Tickets: the secret is 32 random bytes (url-safe); Redis holds only its SHA-256, so a look at
Redis (or its replication stream) gives nobody a usable ticket. `take` is one GETDEL: of two
websockets presenting the same ticket at once, exactly one gets it. The key outlives the
ticket by `grace`, so a late ticket is refused as TICKET_EXPIRED rather than unknown.

Slots: each open terminal holds a member of a sorted set per allocation, scored with the time
its lease ends; the holder renews it while open. A process that dies without releasing its
slots loses them when the lease ends, so a crash cannot lock an allocation out of terminals for
longer than one lease. Acquiring counts live members and adds one in one Lua script, with
Redis's own clock, so two processes cannot both take the last slot.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import orjson
import redis.asyncio as aioredis

from domain.compute.terminals import TerminalTicket

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


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
                             "expires_at": ticket.expires_at.isoformat()})  # fmt: skip
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
                              str(data["origin"]),
                              datetime.fromisoformat(data["expires_at"]))  # fmt: skip


class RedisTerminalSlots:
    """Open terminals per allocation, at most `limit` across every process."""

    def __init__(self, client: aioredis.Redis, namespace: str, lease: timedelta) -> None:
        self._client = client
        self._prefix = f"{namespace}:terminal:open:"
        self.lease = lease
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    async def acquire(self, allocation_id: int, holder: str, limit: int) -> bool:
        done = await self._acquire(keys=[self._prefix + str(allocation_id)],
                                   args=[holder, limit, self.lease.total_seconds()])  # fmt: skip
        return bool(int(done))

    async def renew(self, allocation_id: int, holder: str) -> bool:
        done = await self._renew(keys=[self._prefix + str(allocation_id)],
                                 args=[holder, self.lease.total_seconds()])  # fmt: skip
        return bool(int(done))

    async def release(self, allocation_id: int, holder: str) -> None:
        await self._client.zrem(self._prefix + str(allocation_id), holder)
