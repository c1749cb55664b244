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


DEFAULT_MAX_ARGUMENT_BYTES = 64 * 1024


def check_sizes(arguments: Any, limit: int, path: str = "$") -> None:
    """INVALID_ARGUMENTS naming the first string argument larger than ``limit`` bytes."""
    if isinstance(arguments, str):
        size = len(arguments.encode("utf-8", errors="surrogatepass"))
        if size > limit:
            raise errors.InvalidArguments(
                f"{path}: {size} bytes, at most {limit} (rule: max_argument_bytes)"
            )
    elif isinstance(arguments, dict):
        for key, value in arguments.items():
            check_sizes(value, limit, f"{path}.{key}")
    elif isinstance(arguments, list):
        for index, value in enumerate(arguments):
            check_sizes(value, limit, f"{path}[{index}]")


def header_safe(name: str, value: str) -> None:
    """INVALID_ARGUMENTS when a value that will reach a header holds a control character
    (CR and LF would start a header of the caller's choosing)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise errors.InvalidArguments(
            f"{name}: holds a control character, and it goes into a header (rule: header-safe)"
        )
