"""Stage ``loops``: an agent repeating the same call is stopped, and frozen if it keeps at it."""

from __future__ import annotations

from broker.approvals.service import Approvals
from broker.limits.loop_detector import LoopDetector
from broker.pipeline import Call, Handler, Outcome
from broker.signing import now_ms

LOOP_DETECTOR = "broker:loop-detector"


class LoopStage:
    """RESOURCE_EXHAUSTED LOOP_DETECTED when the same tool is called with identical arguments
    ``repeats`` times within ``within`` (policy ``limits.loop``; default 5 in 60 s). After
    ``freeze_after`` loops in a day the agent is frozen (the kill switch) and an alert says why."""

    needs = frozenset({"verified", "action", "arguments"})
    provides = frozenset[str]()

    def __init__(self, detector: LoopDetector, approvals: Approvals) -> None:
        self._detector = detector
        self._approvals = approvals

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        guard = call.snapshot.policies.policies[call.agent].limits.loop
        now = now_ms()
        tool = call.action.full_name
        verdict = self._detector.check(call.agent, tool, call.args_digest, guard, now)
        if verdict == "ok":
            return await call_next(call)
        if verdict == "freeze":
            loops = self._detector.trips_today(call.agent)
            reason = f"{loops} loops in a day, the last on {tool}"
            await self._approvals.freeze(call.agent, reason, LOOP_DETECTOR)
            self._approvals.alert(
                f"agent {call.agent} was frozen automatically: {reason}; lift it with "
                f"broker unfreeze {call.agent} once it is fixed"
            )
        retry_in = self._detector.retry_in(call.agent, tool, call.args_digest, guard, now)
        raise LoopDetector.refusal(tool, guard, retry_in)
