"""Rate limiters: per tool, per agent and tool, per agent; and the rest an upstream asked for
(a 429's Retry-After, or remaining 0 with a reset).

One process: aiolimiter, in memory. Replicas (``redis_url``): in Redis, shared by all
(``redis_limits``). While Redis does not answer, a write is refused (STORE_UNAVAILABLE: N
replicas each allowing the whole limit could send N times it to an upstream that charges or
bans) and a read falls back to this process's share of the limit, ``requests / replicas``
(``replica_count``); rests are kept here too, so one seen by this process holds either way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiolimiter import AsyncLimiter

from broker import errors
from broker.limits.redis_limits import RedisLimits, RedisUnavailable
from broker.manifest import RateLimit

log = logging.getLogger(__name__)
# A tool's limit shared by replicas spaces its calls this much wider than per / requests:
# calls leave different processes and reach the upstream over different connections, and a
# few milliseconds of jitter between two of them must not put one call too many into the
# upstream's window (measured: exact spacing let 6 of a 5-per-second limit land in 1 s).
SPACING = 1.05


class Limiters:
    """Every limiter of one broker, made on first use and remade when its numbers change."""

    def __init__(self, shared: RedisLimits | None = None, replicas: int = 1) -> None:
        self._limiters: dict[str, tuple[RateLimit, AsyncLimiter]] = {}
        self._rest_until: dict[str, float] = {}  # tool -> time.monotonic() it may be called
        self._shared = shared
        self._replicas = max(1, replicas)

    async def take(
        self, key: str, limit: RateLimit, what: str, *, smooth: bool, write: bool = False
    ) -> None:
        """One slot of ``key``'s limiter, waiting up to ``limit.queue``; RATE_LIMITED saying
        when a slot frees otherwise. ``smooth`` spreads the slots evenly, so no window of
        ``per`` ever sees more than ``requests``: what an upstream's own limit needs. Without
        it a quiet agent may burst up to ``requests`` at once (aiolimiter's leaky bucket)."""
        if self._shared is not None:
            try:
                burst = 1 if smooth else limit.requests
                interval = limit.per / limit.requests * (SPACING if smooth else 1.0)
                wait = await self._shared.take(key, interval, burst, limit.queue)
            except RedisUnavailable as exc:
                if write:
                    log.error("refusing a write: the shared rate limits are down: %s", exc)
                    raise errors.StoreUnavailable(
                        "the shared rate limits are unavailable; writes are refused until "
                        "they are back, retry later"
                    ) from None
                limit = self._share_of(limit)  # this process's part, until Redis is back
            else:
                if wait < 0:
                    raise errors.RateLimited(
                        f"{what} is limited to {limit.requests} call(s) per {limit.per:g}s; "
                        "wait and retry",
                        retry_after=-wait,
                    )
                if wait > 0:
                    await asyncio.sleep(wait)  # the slot is reserved for then
                return
        limiter = self._limiter(key, limit, smooth)
        if limiter.has_capacity():
            await limiter.acquire()
            return
        if limit.queue > 0:
            try:
                await asyncio.wait_for(limiter.acquire(), limit.queue)
                return
            except TimeoutError:
                pass  # waited as long as allowed: refused below
        raise errors.RateLimited(
            f"{what} is limited to {limit.requests} call(s) per {limit.per:g}s; wait and retry",
            retry_after=limit.per / limit.requests,  # one slot drains in this time
        )

    def _share_of(self, limit: RateLimit) -> RateLimit:
        return limit.model_copy(update={"requests": max(1, limit.requests // self._replicas)})

    def _limiter(self, key: str, limit: RateLimit, smooth: bool) -> AsyncLimiter:
        known = self._limiters.get(key)
        if known is None or known[0] != limit:
            # Smooth: one slot every per/requests seconds. A bucket as deep as the limit
            # would let nearly 2x the limit through in the first window after a quiet spell,
            # and an upstream's "10 per second" must never see 19 in one second.
            limiter = (
                AsyncLimiter(1, limit.per / limit.requests)
                if smooth
                else AsyncLimiter(limit.requests, limit.per)
            )
            known = (limit, limiter)
            self._limiters[key] = known
        return known[1]

    async def rest(self, tool: str, seconds: float) -> None:
        """The upstream asked for a rest: no agent calls ``tool`` for ``seconds`` (on any
        replica, with Redis)."""
        until = time.monotonic() + seconds
        self._rest_until[tool] = max(until, self._rest_until.get(tool, 0.0))
        if self._shared is not None:
            try:
                await self._shared.rest(tool, seconds)
            except RedisUnavailable as exc:
                log.warning("the rest of %s is kept by this process only: %s", tool, exc)

    async def rest_left(self, tool: str) -> float:
        """Seconds ``tool`` still rests (0 when it does not), as every replica sees it."""
        left = self._rest_until.get(tool, 0.0) - time.monotonic()
        if self._shared is not None:
            with contextlib.suppress(RedisUnavailable):  # the rests seen here still hold
                left = max(left, await self._shared.rest_left(tool))
        return max(0.0, left)

    async def wait_rest(self, tool: str, queue: float) -> None:
        """UPSTREAM_RATE_LIMITED while ``tool`` rests (waiting up to ``queue`` for it to end)."""
        left = await self.rest_left(tool)
        if left <= 0:
            return
        if left <= queue:
            await asyncio.sleep(left)
            return
        raise errors.UpstreamRateLimited(
            f"{tool} asked the broker to slow down; no agent calls it for {left:.1f}s more",
            retry_after=left,
        )
