"""Stage ``loops``: an agent repeating the same call is stopped, and frozen if it keeps at it."""

from __future__ import annotations

from broker.approvals.service import Approvals
from broker.limits.loop_detector import LoopDetector
from broker.limits.redis_limits import RedisLimits, RedisUnavailable
from broker.pipeline import Call, Handler, Outcome
from broker.policy.model import LoopGuard
from broker.signing import now_ms

LOOP_DETECTOR = "broker:loop-detector"


class LoopStage:
    """RESOURCE_EXHAUSTED LOOP_DETECTED when the same tool is called with identical arguments
    ``repeats`` times within ``within`` (policy ``limits.loop``; default 5 in 60 s). After
    ``freeze_after`` loops in a day the agent is frozen (the kill switch) and an alert says why."""

    needs = frozenset({"verified", "action", "arguments"})
    provides = frozenset[str]()

    def __init__(
        self, detector: LoopDetector, approvals: Approvals, shared: RedisLimits | None = None
    ) -> None:
        self._detector = detector
        self._approvals = approvals
        self._shared = shared  # replicas: the windows in Redis, the same for all

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        guard = call.snapshot.policies.policies[call.agent].limits.loop
        tool = call.action.full_name
        verdict, loops, retry_in = await self._check(call.agent, tool, call.args_digest, guard)
        if verdict == "ok":
            return await call_next(call)
        if verdict == "freeze":
            reason = f"{loops} loops in a day, the last on {tool}"
            await self._approvals.freeze(call.agent, reason, LOOP_DETECTOR)
            self._approvals.alert(
                f"agent {call.agent} was frozen automatically: {reason}; lift it with "
                f"broker unfreeze {call.agent} once it is fixed"
            )
        raise LoopDetector.refusal(tool, guard, retry_in)

    async def _check(
        self, agent: str, tool: str, digest: str, guard: LoopGuard
    ) -> tuple[str, int, float]:
        """(ok | loop | freeze, the agent's loops in the last day, seconds to wait)."""
        if self._shared is not None:
            try:
                looping, loops, retry_in = await self._shared.loop(
                    agent, tool, digest, guard.within, guard.repeats
                )
            except RedisUnavailable:
                pass  # this process's own windows decide until Redis is back
            else:
                if not looping:
                    return "ok", loops, 0.0
                return ("freeze" if loops >= guard.freeze_after else "loop"), loops, retry_in
        now = now_ms()
        verdict = self._detector.check(agent, tool, digest, guard, now)
        loops = self._detector.trips_today(agent)
        return verdict, loops, self._detector.retry_in(agent, tool, digest, guard, now)
