"""Circuit breakers per tool: after N failures in a row, fail fast for a cool-down, then let
one call through to see whether the tool is back."""

from __future__ import annotations

import time
from dataclasses import dataclass

from broker import errors
from broker.manifest import CircuitBreaker


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class Circuits:
    """One breaker per tool (in memory: after a restart every circuit starts closed)."""

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}

    def enter(self, tool: str, config: CircuitBreaker) -> bool:
        """Refuse (UPSTREAM_UNAVAILABLE, final) while open; True when this call is the probe."""
        state = self._states.setdefault(tool, _State())
        if state.failures < config.failures:
            return False
        now = time.monotonic()
        if now < state.open_until or state.probing:
            error = errors.UpstreamUnavailable(
                f"{tool} failed {state.failures} times in a row; the broker stops calling it "
                f"until {max(0.0, state.open_until - now):.1f}s from now",
                retry_after=max(0.1, state.open_until - now),
            )
            error.final = True
            raise error
        state.probing = True
        return True

    def succeeded(self, tool: str) -> None:
        """The tool answered: close the circuit."""
        self._states[tool] = _State()

    def failed(self, tool: str, config: CircuitBreaker) -> None:
        """The tool failed (5xx, timeout, no connection): count it, open at the threshold."""
        state = self._states.setdefault(tool, _State())
        state.failures += 1
        state.probing = False
        if state.failures >= config.failures:
            state.open_until = time.monotonic() + config.cool_down

    def released(self, tool: str) -> None:
        """A probe that ended neither way (cancelled): let the next call probe."""
        state = self._states.get(tool)
        if state is not None:
            state.probing = False
