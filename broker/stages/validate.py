"""Stage ``validate``: the arguments are one JSON object that fits the action's JSON Schema."""

from __future__ import annotations

from broker import errors, jsonexact
from broker.arguments import DEFAULT_MAX_ARGUMENT_BYTES, check_sizes, parse_arguments
from broker.pipeline import Call, Handler, Outcome


class ValidateStage:
    """INVALID_ARGUMENTS, naming the argument and the rule, for anything the schema refuses."""

    needs = frozenset({"action"})
    provides = frozenset({"arguments"})

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        arguments = parse_arguments(call.request.arguments_json)
        limit = getattr(call.action.tool, "max_argument_bytes", DEFAULT_MAX_ARGUMENT_BYTES)
        check_sizes(arguments, limit)
        problem = call.action.schema_problem(arguments)
        if problem is not None:
            raise errors.InvalidArguments(
                f"{problem}; ListTools shows the schema of {call.action.full_name}"
            )
        call.arguments = arguments
        call.args_digest = jsonexact.digest(arguments)
        return await call_next(call)
