"""Arguments as agents send them: one JSON object, bounded in size, numbers exact."""

from __future__ import annotations

from typing import Any

from broker import errors, jsonexact

MAX_ARGUMENTS_BYTES = 256 * 1024


def parse_arguments(text: str) -> dict[str, Any]:
    """The arguments object from ``arguments_json`` (empty text means ``{}``); anything else is
    INVALID_ARGUMENTS saying what is wrong."""
    text = text or "{}"
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
    return arguments
