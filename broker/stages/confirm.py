"""Stage ``confirm``: calls that need a human do not run without one."""

from __future__ import annotations

from broker import errors
from broker.pipeline import Call, Handler, Outcome


class ConfirmStage:
    """Asks the policy whether a human must approve this call. This broker has no approval
    channel yet, so such a call is refused (fail closed) with APPROVAL_DENIED saying so; a
    grant with ``approval: never`` (or a condition that does not hold) runs."""

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        assert call.grant is not None
        assert call.action is not None
        assert call.arguments is not None
        decision = call.snapshot.policies.approval_for(call.grant, call.action, call.arguments)
        if decision.outcome == "deny":
            raise errors.ArgumentNotAllowed(decision.message)
        if decision.outcome == "approval":
            raise errors.ApprovalDenied(
                f"{call.action.full_name} needs a human's approval ({decision.message}; "
                f"{decision.rule}) and this broker has no approval channel configured"
            )
        return await call_next(call)
