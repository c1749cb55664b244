"""Stage ``confirm``: calls that need a human wait for one."""

from __future__ import annotations

from broker import errors
from broker.approvals.service import Approvals
from broker.pipeline import Call, Handler, Outcome
from broker.untrusted import TaintedValue


class ConfirmStage:
    """Asks the policy whether a human must approve (a write, a condition that holds, values
    from untrusted content). If so, the call is stored as pending and the agent gets
    PENDING_APPROVAL; it runs only after a human approves it."""

    def __init__(self, approvals: Approvals) -> None:
        self._approvals = approvals

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        assert call.grant is not None
        assert call.action is not None
        assert call.arguments is not None
        if call.action.is_write:  # outside values seen earlier in this task
            call.tainted = [
                TaintedValue(kind, value, origin)
                for kind, value, origin in self._approvals.store.taint(
                    call.agent, call.request.task_id
                )
            ]
        decision = call.snapshot.policies.approval_for(
            call.grant, call.action, call.arguments, call.tainted
        )
        if decision.outcome == "deny":
            raise errors.ArgumentNotAllowed(decision.message)
        if decision.outcome == "approval":
            return await self._approvals.ask(call, decision)
        return await call_next(call)
