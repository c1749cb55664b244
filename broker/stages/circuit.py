"""Stage ``circuit``: a tool that keeps failing is left alone for a while."""

from __future__ import annotations

from broker import errors
from broker.limits.circuit_breakers import Circuits
from broker.pipeline import Call, Handler, Outcome


class CircuitStage:
    """After ``circuit_breaker.failures`` failures in a row (5xx, timeout, no connection) the
    tool fails fast with UPSTREAM_UNAVAILABLE for ``cool_down``; then one call goes through:
    an answer closes the circuit, a failure opens it again."""

    needs = frozenset({"action"})
    provides = frozenset[str]()

    def __init__(self, circuits: Circuits) -> None:
        self._circuits = circuits

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        tool = call.action.tool
        self._circuits.enter(tool.name, tool.circuit_breaker)
        try:
            outcome = await call_next(call)
        except (errors.UpstreamUnavailable, errors.UpstreamTimeout):
            self._circuits.failed(tool.name, tool.circuit_breaker)
            raise
        except BaseException:
            self._circuits.released(tool.name)
            raise
        self._circuits.succeeded(tool.name)
        return outcome
