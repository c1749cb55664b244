"""Stage ``list_tools``: the tool actions this agent is granted, and nothing else."""

from __future__ import annotations

import json

from broker.pipeline import Call, Handler, Outcome
from broker.v1 import broker_pb2 as pb


class ListToolsStage:
    """Answers ListTools with the agent's granted actions and their argument schemas."""

    needs = frozenset({"verified"})
    provides = frozenset[str]()

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        tools = [
            pb.ToolInfo(
                name=action.full_name,
                description=action.spec.description or action.tool.description,
                arguments_schema_json=json.dumps(action.validator.schema, sort_keys=True),
                write=action.is_write,
                needs_approval=_may_need_approval(action.is_write, ref.grant.approval),
                destructive=action.spec.is_destructive,
                idempotent=action.spec.is_idempotent,
                open_world=action.tool.kind == "http",
            )
            for action, ref in call.snapshot.policies.granted_actions(call.verified.agent)
        ]
        return Outcome(tools=tools)


def _may_need_approval(is_write: bool, approval: object) -> bool:
    # a condition may or may not hold for a given call: say yes, the agent should expect it
    return approval != "never" and (is_write or approval is not None)
