"""Stage ``constrain``: the (now well-typed) argument values are ones the grant allows."""

from __future__ import annotations

from broker import errors
from broker.pipeline import Call, Handler, Outcome


class ConstrainStage:
    """PERMISSION_DENIED ARGUMENT_NOT_ALLOWED, naming the argument, its value, the rule it
    breaks and the grant that holds the rule."""

    needs = frozenset({"grant", "arguments"})
    provides = frozenset[str]()

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        violation = call.snapshot.policies.constraint_violation(call.grant, call.arguments)
        if violation:
            raise errors.ArgumentNotAllowed(violation)
        return await call_next(call)
