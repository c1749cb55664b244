"""Stage ``await``: wait on a call that waits for a human; only waits and reads."""

from __future__ import annotations

from broker.approvals.service import Approvals
from broker.pipeline import Call, Handler, Outcome


class AwaitStage:
    """Answers Await with the call's outcome once known (DONE, TOOL_ERROR, or the refusal
    APPROVAL_DENIED / APPROVAL_EXPIRED), or PENDING_APPROVAL again after the capped wait."""

    needs = frozenset({"verified"})
    provides = frozenset[str]()

    def __init__(self, approvals: Approvals) -> None:
        self._approvals = approvals

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        request = getattr(call.verified.envelope, "await")  # `await` is a keyword
        return await self._approvals.await_outcome(
            request.call_id, call.agent, request.wait_ms, call.time_left()
        )
