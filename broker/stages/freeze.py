"""Stage ``freeze``: the kill switch, checked on every request right after verify."""

from __future__ import annotations

from broker.approvals.service import Freezes
from broker.pipeline import Call, Handler, Outcome


class FreezeStage:
    """PERMISSION_DENIED AGENT_FROZEN while the agent, or every agent, is frozen."""

    needs = frozenset({"verified"})
    provides = frozenset[str]()

    def __init__(self, freezes: Freezes) -> None:
        self._freezes = freezes

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        self._freezes.check(call.agent)
        return await call_next(call)
