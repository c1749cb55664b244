"""Stage ``constrain``: the (now well-typed) argument values are ones the grant allows."""

from __future__ import annotations

from broker import errors
from broker.pipeline import Call, Handler, Outcome


class ConstrainStage:
    """PERMISSION_DENIED ARGUMENT_NOT_ALLOWED, naming the argument, its value, the rule it
    breaks and the grant that holds the rule."""

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        assert call.grant is not None
        assert call.arguments is not None
        violation = call.snapshot.policies.constraint_violation(call.grant, call.arguments)
        if violation:
            raise errors.ArgumentNotAllowed(violation)
        return await call_next(call)
