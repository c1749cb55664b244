"""Stage ``ratelimit``: per tool (manifest), per agent and tool (grant), per agent (policy);
and the rest an upstream asked for, for every agent."""

from __future__ import annotations

from broker import errors
from broker.limits.rates import Limiters
from broker.manifest import RateLimit
from broker.pipeline import Call, Handler, Outcome


class RateLimitStage:
    """A call over a limit waits up to the limit's queue time, else RESOURCE_EXHAUSTED
    RATE_LIMITED with the time a slot frees. A tool that answered 429 (or "slow down" in its
    body, or remaining 0 with a reset) rests for as long as it asked: UPSTREAM_RATE_LIMITED."""

    needs = frozenset({"verified", "action", "grant"})
    provides = frozenset[str]()

    def __init__(self, limiters: Limiters) -> None:
        self._limiters = limiters

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        tool = call.action.tool
        agent = call.agent
        name = call.action.full_name
        tool_limit = tool.rate_limit
        await self._limiters.wait_rest(tool.name, tool_limit.queue if tool_limit else 0.0)
        write = call.action.is_write  # with Redis down, writes are refused (limits.rates)
        per_minute = call.snapshot.policies.policies[agent].limits.calls_per_minute
        if per_minute is not None:
            agent_limit = RateLimit.model_construct(requests=per_minute, per=60.0, queue=0.0)
            await self._limiters.take(
                f"agent:{agent}", agent_limit, f"agent {agent}", smooth=False, write=write
            )
        if call.grant.grant.rate_limit is not None:
            await self._limiters.take(
                f"grant:{agent}:{name}",
                call.grant.grant.rate_limit,
                f"{name} for {agent}",
                smooth=False,
                write=write,
            )
        if tool_limit is not None:
            await self._limiters.take(
                f"tool:{tool.name}", tool_limit, f"tool {tool.name}", smooth=True, write=write
            )
        try:
            outcome = await call_next(call)
        except errors.UpstreamRateLimited as exc:
            await self._limiters.rest(tool.name, exc.retry_after or 1.0)
            raise
        if outcome.upstream_rest > 0:
            await self._limiters.rest(tool.name, outcome.upstream_rest)
        return outcome
