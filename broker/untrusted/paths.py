"""JSON paths for findings and taint, and a walk over the leaves of a parsed JSON value.

Paths follow JSONPath's normalised form closely enough for people and tools: ``$`` is the
root, ``.name`` a member whose name is an identifier, ``["any name"]`` any other member (the
name JSON-quoted), ``[3]`` an array element: ``$.messages[2].body``, ``$["x-header"]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

MAX_LEAVES = 1_000_000  # a walk stops here: bounded work whatever the input

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")


def child(path: str, key: str | int) -> str:
    """The path of member ``key`` (an object member name or an array index) under ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def leaves(value: Any, path: str, *, numbers: bool = False) -> Iterator[tuple[str, str]]:
    """(path, text) for every string in ``value`` (and every number, as text, when
    ``numbers``), depth first in document order. Iterative, so any nesting depth is fine."""
    stack: list[tuple[str, Any]] = [(path, value)]
    seen = 0
    while stack and seen < MAX_LEAVES:
        where, item = stack.pop()
        seen += 1
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            stack.extend((child(where, str(k)), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((child(where, i), v) for i, v in reversed(list(enumerate(item))))
        elif numbers and isinstance(item, int | float | Decimal) and not isinstance(item, bool):
            yield where, str(item)
