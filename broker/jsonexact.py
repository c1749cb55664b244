"""JSON that keeps numbers exact: decimals stay ``Decimal``, duplicate keys are refused.

Agents send arguments as a JSON string so that ``"amount": 4999.99`` and large integers reach the
upstream exactly as written. Parsing into floats would change them; accepting duplicate keys would
let the broker check one value while the upstream uses the other.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any


class JsonError(ValueError):
    """Text that is not acceptable JSON; the message says where."""


def _no_constants(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonError(f"duplicate key '{key[:64]}' in one object")
        result[key] = value
    return result


# Built once: json.loads with keyword arguments would build a new decoder on every call.
_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=_no_constants, object_pairs_hook=_pairs
)


def loads(text: str) -> Any:
    """Parse JSON with exact numbers; raises JsonError for bad JSON, NaN or duplicate keys."""
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise JsonError("nested too deeply") from None


def dumps(value: Any, *, canonical: bool = False) -> str:
    """Serialize, writing each Decimal exactly as it is. ``canonical`` sorts keys and drops
    spaces, for digests."""
    if not _has_decimal(value):  # the common case: the C encoder, many times faster
        if canonical:
            return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return json.dumps(value, ensure_ascii=False)
    return _dumps(value, canonical)


def _has_decimal(value: Any) -> bool:
    if isinstance(value, Decimal):
        return True
    if isinstance(value, dict):
        return any(_has_decimal(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_decimal(v) for v in value)
    return False


def _dumps(value: Any, canonical: bool) -> str:
    if isinstance(value, dict):
        items = sorted(value.items()) if canonical else value.items()
        sep = ":" if canonical else ": "
        inner = (
            f"{json.dumps(k, ensure_ascii=False)}{sep}{_dumps(v, canonical)}" for k, v in items
        )
        return "{" + ("," if canonical else ", ").join(inner) + "}"
    if isinstance(value, list | tuple):
        joiner = "," if canonical else ", "
        return "[" + joiner.join(_dumps(v, canonical) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def digest(value: Any) -> str:
    """SHA-256 (hex) of the canonical form: equal values give equal digests."""
    return hashlib.sha256(dumps(value, canonical=True).encode()).hexdigest()
