"""Stage ``confirm``: calls that need a human wait for one."""

from __future__ import annotations

from broker import errors
from broker.approvals.service import Approvals
from broker.pipeline import Call, Handler, Outcome
from broker.storage.interfaces import TaintStore
from broker.untrusted import TaintedValue


class ConfirmStage:
    """Asks the policy whether a human must approve (a write, a condition that holds, values
    from untrusted content). If so, the call is stored as pending and the agent gets
    PENDING_APPROVAL; it runs only after a human approves it."""

    needs = frozenset({"verified", "action", "grant", "arguments"})
    provides = frozenset[str]()

    def __init__(self, approvals: Approvals, taint: TaintStore) -> None:
        self._approvals = approvals
        self._taint = taint

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        if call.action.is_write:  # outside values seen earlier in this task
            seen = await self._taint.values(call.agent, call.request.task_id)
            call.tainted = [TaintedValue(row.kind, row.value, row.origin) for row in seen]
        decision = call.snapshot.policies.approval_for(
            call.grant, call.action, call.arguments, call.tainted
        )
        if decision.outcome == "deny":
            raise errors.ArgumentNotAllowed(decision.message)
        if decision.outcome == "approval":
            return await self._approvals.ask(call, decision)
        return await call_next(call)
