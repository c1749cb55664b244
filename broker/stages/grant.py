"""Stage ``grant``: the agent's policy grants this tool action (deny by default)."""

from __future__ import annotations

from broker import errors
from broker.pipeline import Call, Handler, Outcome


class GrantStage:
    """UNKNOWN_TOOL when no manifest defines the action; TOOL_NOT_GRANTED when the agent's
    policy does not grant it."""

    needs = frozenset({"verified"})
    provides = frozenset({"action", "grant"})

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        name = call.request.tool
        action = call.snapshot.catalog.get(name)
        if action is None:
            raise errors.UnknownTool(
                f"no tool action '{name[:128]}'; ListTools shows the actions you may call"
            )
        grant = call.snapshot.policies.grant_for(call.verified.agent, action)
        if grant is None:
            raise errors.ToolNotGranted(
                f"agent '{call.verified.agent}' is not granted '{name}'; a grant in "
                f"policies/{call.verified.agent}.yaml is needed"
            )
        call.action = action
        call.grant = grant
        return await call_next(call)
