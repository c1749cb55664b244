"""Rate limiters (aiolimiter), made per server: per tool, per agent and tool, per agent; and
the rest an upstream asked for (a 429's Retry-After, or remaining 0 with a reset)."""

from __future__ import annotations

import asyncio
import time

from aiolimiter import AsyncLimiter

from broker import errors
from broker.manifest import RateLimit


class Limiters:
    """Every limiter of one broker, made on first use and remade when its numbers change."""

    def __init__(self) -> None:
        self._limiters: dict[str, tuple[RateLimit, AsyncLimiter]] = {}
        self._rest_until: dict[str, float] = {}  # tool -> time.monotonic() it may be called

    async def take(self, key: str, limit: RateLimit, what: str, *, smooth: bool) -> None:
        """One slot of ``key``'s limiter, waiting up to ``limit.queue``; RATE_LIMITED saying
        when a slot frees otherwise. ``smooth`` spreads the slots evenly, so no window of
        ``per`` ever sees more than ``requests``: what an upstream's own limit needs. Without
        it a quiet agent may burst up to ``requests`` at once (aiolimiter's leaky bucket)."""
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

    def rest(self, tool: str, seconds: float) -> None:
        """The upstream asked for a rest: no agent calls ``tool`` for ``seconds``."""
        until = time.monotonic() + seconds
        self._rest_until[tool] = max(until, self._rest_until.get(tool, 0.0))

    async def wait_rest(self, tool: str, queue: float) -> None:
        """UPSTREAM_RATE_LIMITED while ``tool`` rests (waiting up to ``queue`` for it to end)."""
        left = self._rest_until.get(tool, 0.0) - time.monotonic()
        if left <= 0:
            return
        if left <= queue:
            await asyncio.sleep(left)
            return
        raise errors.UpstreamRateLimited(
            f"{tool} asked the broker to slow down; no agent calls it for {left:.1f}s more",
            retry_after=left,
        )
