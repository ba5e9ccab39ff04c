"""Counted leases in Redis: at most N holders of one key across every process.

Each holder is a member of a sorted set per key, scored with the time its lease ends; the
holder renews it while it holds. A process that dies without releasing its slots loses them
when the lease ends, so a crash cannot lock anyone out for longer than one lease. Acquiring
counts live members and adds one in one Lua script, with Redis's own clock, so two processes
cannot both take the last slot. Used for open terminals per allocation and live websocket
connections per user.
"""

from __future__ import annotations

from datetime import timedelta

import redis.asyncio as aioredis

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


class RedisSlots:
    """At most `limit` holders per key (limits are per call: policy belongs to the caller)."""

    def __init__(self, client: aioredis.Redis, prefix: str, lease: timedelta) -> None:
        self._client = client
        self._prefix = prefix
        self.lease = lease
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    async def acquire(self, key: str | int, holder: str, limit: int) -> bool:
        done = await self._acquire(keys=[f"{self._prefix}:{key}"],
                                   args=[holder, limit, self.lease.total_seconds()])  # fmt: skip
        return bool(int(done))

    async def renew(self, key: str | int, holder: str) -> bool:
        """False when the lease had lapsed (the holder no longer counts)."""
        done = await self._renew(keys=[f"{self._prefix}:{key}"],
                                 args=[holder, self.lease.total_seconds()])  # fmt: skip
        return bool(int(done))

    async def release(self, key: str | int, holder: str) -> None:
        await self._client.zrem(f"{self._prefix}:{key}", holder)
