"""Rate limits, upstream rests and loop windows that every replica shares, in Redis.

Each decision is one Lua script, run atomically by Redis on Redis's own clock (``TIME``), so
replicas whose clocks disagree still share one limit:

- a limit is GCRA (the generic cell rate algorithm): one key holds the theoretical arrival
  time of the next call; a call is allowed when it is no earlier than that time minus the
  burst the limit allows, and may reserve a slot up to its queue time ahead;
- a rest (an upstream's 429 or "slow down") is a key that expires when the rest ends;
- a loop window is a sorted set of the times of identical calls, and each agent's loops of
  the last day another.

When Redis does not answer (a short timeout), ``RedisUnavailable`` is raised and the caller
falls back (``rates.Limiters``, ``stages.loops``); after a failure Redis is left alone for
RETRY_S, so a Redis that is down costs calls nothing but the fallback.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from broker.storage.urls import redacted

TIMEOUT_S = 0.5  # a Redis that takes longer is treated as down for this call
RETRY_S = 1.0  # after a failure, how long calls use the fallback before Redis is tried again
DAY_MS = 86_400_000

# KEYS[1] the limit; ARGV: emission interval (ms: per / requests), burst tolerance (ms), the
# longest the call may wait for its slot (ms). Returns {1, ms to wait first} or {0, ms until a
# slot frees}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, tolerance, queue = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > queue then return {0, wait} end
if wait < 0 then wait = 0 end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now) + 1000)
return {1, wait}
"""
# KEYS[1] the tool's rest; ARGV[1] its length (ms). Keeps the later end of two rests.
_REST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or 0)
if ends > current then redis.call('SET', KEYS[1], ends, 'PX', tonumber(ARGV[1]) + 1000) end
return 0
"""
# KEYS[1] the tool's rest. Returns the ms it has left (0: none).
_REST_LEFT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = tonumber(redis.call('GET', KEYS[1]) or 0)
if ends > now then return ends - now end
return 0
"""
# KEYS[1] the window of identical calls, KEYS[2] the agent's loops; ARGV: the window (ms),
# repeats, a unique member. Returns {0 ok | 1 loop, loops in the last day, ms until the
# oldest identical call leaves the window}.
_LOOP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local within, repeats = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - within - 1)
if redis.call('ZCARD', KEYS[1]) + 1 < repeats then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], within + 1000)
  return {0, 0, 0}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 86400000)
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('PEXPIRE', KEYS[2], 86400000)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local left = 0
if oldest[2] then left = tonumber(oldest[2]) + within - now end
return {1, redis.call('ZCARD', KEYS[2]), left}
"""


class RedisUnavailable(Exception):
    """Redis did not answer in time (or is being left alone after a failure)."""


class RedisLimits:
    """The shared limits of one deployment (keys under ``toolbroker:<broker_id>:``)."""

    def __init__(self, url: str, broker_id: str) -> None:
        self.where = redacted(url)
        self._client: Any = aioredis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry_on_timeout=False,
        )
        self._prefix = f"toolbroker:{broker_id}:"
        self._gcra = self._client.register_script(_GCRA)
        self._rest = self._client.register_script(_REST)
        self._rest_left = self._client.register_script(_REST_LEFT)
        self._loop = self._client.register_script(_LOOP)
        self._down_until = 0.0

    async def take(self, key: str, interval_s: float, burst: int, queue_s: float) -> float:
        """A slot of limit ``key`` (one call per ``interval_s``, ``burst`` at once): the
        seconds to wait before the call may go (0: now), or a negative number, minus the
        seconds until a slot frees, when it may not wait that long."""
        interval = max(1, round(interval_s * 1000))
        allowed, wait = await self._run(
            self._gcra,
            [self._prefix + "limit:" + key],
            [interval, interval * (burst - 1), round(queue_s * 1000)],
        )
        return int(wait) / 1000 if int(allowed) else -max(0.001, int(wait) / 1000)

    async def rest(self, tool: str, seconds: float) -> None:
        """``tool`` rests for ``seconds`` on every replica."""
        await self._run(self._rest, [self._prefix + "rest:" + tool], [round(seconds * 1000)])

    async def rest_left(self, tool: str) -> float:
        """Seconds left of ``tool``'s rest (0: none)."""
        left = await self._run(self._rest_left, [self._prefix + "rest:" + tool], [])
        return int(left) / 1000

    async def loop(
        self, agent: str, tool: str, digest: str, within_s: float, repeats: int
    ) -> tuple[bool, int, float]:
        """Count an identical call: (looping, the agent's loops in the last day, seconds until
        the oldest identical call leaves the window)."""
        keys = [
            f"{self._prefix}loop:{agent}:{tool}:{digest}",
            f"{self._prefix}loops:{agent}",
        ]
        member = secrets.token_hex(8)
        looping, loops, left = await self._run(
            self._loop, keys, [round(within_s * 1000), repeats, member]
        )
        return bool(int(looping)), int(loops), max(0.0, int(left) / 1000)

    async def close(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if time.monotonic() < self._down_until:
            raise RedisUnavailable(f"Redis at {self.where} failed less than {RETRY_S:g}s ago")
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + RETRY_S
            raise RedisUnavailable(f"Redis at {self.where}: {exc}") from None
