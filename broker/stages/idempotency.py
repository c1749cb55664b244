"""Stage ``idempotency``: a retried write gets the first answer, never a second execution."""

from __future__ import annotations

from broker import errors
from broker.approvals.service import Approvals
from broker.approvals.stored_calls import EXECUTING, binding_digest
from broker.arguments import header_safe
from broker.pipeline import Call, Handler, Outcome


class IdempotencyStage:
    """Writes need an idempotency key. The same key with the same request returns the stored
    outcome (or the same pending call) without reaching the tool, after a restart too; with
    another request it is IDEMPOTENCY_KEY_REUSED; while the first still runs, CALL_IN_PROGRESS."""

    needs = frozenset({"verified", "action", "arguments"})
    provides = frozenset[str]()

    def __init__(self, approvals: Approvals) -> None:
        self._approvals = approvals

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        call.digest = binding_digest(call)
        if not call.action.is_write:
            return await call_next(call)
        key = call.request.idempotency_key
        if not key:
            raise errors.IdempotencyKeyRequired(
                f"{call.action.full_name} is a write: send an idempotency_key (a fresh one per "
                "intended action, the same one when retrying it)"
            )
        if len(key) > 200:
            raise errors.InvalidArguments("idempotency_key is longer than 200 characters")
        header_safe("idempotency_key", key)  # it may be sent in the upstream's header
        earlier = await self._approvals.calls.find(call.agent, key)
        if earlier is None:
            return await call_next(call)
        if earlier.digest != call.digest:
            raise errors.IdempotencyKeyReused(
                f"idempotency key '{key[:64]}' was used for a different request (call "
                f"{earlier.call_id}); use a new key for a new action"
            )
        if earlier.state == EXECUTING:
            raise errors.CallInProgress(
                f"call {earlier.call_id} with this idempotency key is still running; "
                "retry later or Await it"
            )
        return self._approvals.answer(earlier)
