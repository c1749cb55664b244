"""Stage ``await``: wait on a pending call."""

from __future__ import annotations

from broker import errors
from broker.pipeline import Call, Handler, Outcome


class AwaitStage:
    """This broker keeps no pending calls yet (no write waits for approval), so every call id
    is unknown: NOT_FOUND UNKNOWN_CALL."""

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        assert call.verified is not None
        call_id = getattr(call.verified.envelope, "await").call_id  # `await` is a keyword
        raise errors.UnknownCall(f"no pending call '{call_id}' for this agent")
