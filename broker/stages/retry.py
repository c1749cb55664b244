"""Stage ``retry``: reads that fail upstream are tried again, within the caller's deadline."""

from __future__ import annotations

import asyncio
import random

from broker import errors
from broker.manifest import HttpTool
from broker.pipeline import Call, Handler, Outcome

_RETRYABLE = (errors.UpstreamUnavailable, errors.UpstreamTimeout, errors.UpstreamRateLimited)
# A try that could run for less than this is not made: a read that timed out at the caller's
# deadline would otherwise be tried again in the margin its answer needs to get back.
MIN_TRY_S = 0.25


class RetryStage:
    """Retries a read after a 5xx, a connection failure, a timeout or a 429: exponential
    backoff with full jitter, never sooner than Retry-After, never past the caller's deadline,
    at most ``retries.max`` times (manifest). A write is never retried, unless the manifest
    names the upstream's idempotency header (the broker then sends the call's key in it)."""

    needs = frozenset({"action"})
    provides = frozenset[str]()

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        tool = call.action.tool
        if not isinstance(tool, HttpTool):
            return await call_next(call)
        if call.action.is_write and tool.idempotency_header is None:
            return await call_next(call)
        policy = tool.retries
        attempt = 0
        while True:
            try:
                return await call_next(call)
            except _RETRYABLE as exc:
                if exc.final or attempt >= policy.max:
                    raise
                backoff = self._rng.uniform(0, min(policy.cap, policy.base * 2**attempt))
                delay = max(backoff, exc.retry_after or 0.0)
                left = call.time_left()
                if left is not None and left - delay < MIN_TRY_S:
                    raise  # the caller would be gone before the next try could finish
                attempt += 1
                await asyncio.sleep(delay)
