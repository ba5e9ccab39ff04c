"""Fixed-window rate limits in Redis, shared by every API process."""

from __future__ import annotations

import redis.asyncio as aioredis

# INCR and set the window's expiry in one step, so a crash between them cannot leave a
# counter that never expires.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


_FORGIVE = """
if (tonumber(redis.call('GET', KEYS[1]) or '0')) > 0 then redis.call('DECR', KEYS[1]) end
"""


class RedisRateLimiter:
    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:rl:"
        self._hit = client.register_script(_HIT)
        self._forgive = client.register_script(_FORGIVE)

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        count, ttl = await self._hit(keys=[self._prefix + key], args=[window_seconds])
        return None if int(count) <= limit else max(int(ttl), 1)

    async def forgive(self, key: str) -> None:
        # Never below zero, and never a counter without an expiry.
        await self._forgive(keys=[self._prefix + key])
