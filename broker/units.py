"""Value types that people write in YAML files: durations such as ``30s`` or ``2m``."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """``"30s"``, ``"2m"``, ``"1.5h"``, ``"250ms"``, ``"1d"`` -> seconds. Bare numbers are refused:
    a reader cannot tell whether ``30`` meant seconds or minutes."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        raise ValueError(f"write a unit after {value}: for example {value}s, {value}m or {value}ms")
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 2m or 250ms")
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a duration; write for example 30s, 2m, 1h or 250ms")
    return float(match.group(1)) * _SECONDS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A duration in seconds, written in files with a unit (``30s``)."""
