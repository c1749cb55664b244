"""Stage ``validate``: the arguments are one JSON object that fits the action's JSON Schema."""

from __future__ import annotations

import jsonschema

from broker import errors, jsonexact
from broker.pipeline import Call, Handler, Outcome

MAX_ARGUMENTS_BYTES = 256 * 1024


class ValidateStage:
    """INVALID_ARGUMENTS, naming the argument and the rule, for anything the schema refuses."""

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        assert call.action is not None
        text = call.request.arguments_json or "{}"
        if len(text) > MAX_ARGUMENTS_BYTES:
            raise errors.InvalidArguments(
                f"arguments_json is {len(text)} bytes; at most {MAX_ARGUMENTS_BYTES} are accepted"
            )
        try:
            arguments = jsonexact.loads(text)
        except jsonexact.JsonError as exc:
            raise errors.InvalidArguments(f"arguments_json: {exc}") from None
        if not isinstance(arguments, dict):
            raise errors.InvalidArguments("arguments_json must be a JSON object, such as {}")
        error = jsonschema.exceptions.best_match(call.action.validator.iter_errors(arguments))
        if error is not None:
            raise errors.InvalidArguments(describe(error, call.action.full_name))
        call.arguments = arguments
        call.args_digest = jsonexact.digest(arguments)
        return await call_next(call)


def describe(error: jsonschema.ValidationError, action: str) -> str:
    """One line naming the argument and the rule it broke, e.g. ``$.amount: 5 is not of type
    'string' (rule: type)``."""
    where = str(error.json_path)
    message = _shorten(error.message)
    hint = f"; ListTools shows the schema of {action}"
    return f"{where}: {message} (rule: {error.validator}){hint}"


def _shorten(value: object, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
