"""Stage ``journal``: a write's intent is durable before it leaves the broker, its outcome
after. A broker that stops in between finds the intent at start and marks it outcome_unknown:
never run again, raised to a human."""

from __future__ import annotations

import asyncio

from broker import errors
from broker.approvals.stored_calls import (
    APPROVED,
    DONE,
    EXECUTING,
    FAILED,
    TOOL_ERROR,
    UNKNOWN,
    binding_digest,
    encode_error,
    encode_outcome,
    new_record,
)
from broker.pipeline import Call, Handler, Outcome
from broker.signing import now_ms
from broker.storage.interfaces import CallStore
from broker.v1 import broker_pb2 as pb


class JournalStage:
    """Records writes (and approved calls) in the calls table around their execution."""

    needs = frozenset({"verified", "action", "arguments"})
    provides = frozenset[str]()

    def __init__(self, calls: CallStore) -> None:
        self._calls = calls

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        if not call.has("record") and not call.action.is_write:
            return await call_next(call)
        await self._begin(call)
        try:
            outcome = await call_next(call)
        except errors.BrokerError as exc:
            await self._end(call, FAILED, encode_error(exc))
            raise
        except BaseException:
            # cancelled or crashed mid-call: whether the tool acted cannot be known
            await asyncio.shield(self._end(call, UNKNOWN, ""))
            raise
        state = TOOL_ERROR if outcome.state == pb.CallResult.TOOL_ERROR else DONE
        await self._end(call, state, encode_outcome(outcome))
        return outcome

    async def _begin(self, call: Call) -> None:
        now = now_ms()
        call.digest = call.digest or binding_digest(call)
        if call.has("record"):  # an approved call: bound to what was approved
            if call.record.digest != call.digest:
                await self._calls.transition(
                    call.call_id,
                    (APPROVED,),
                    FAILED,
                    updated_ms=now,
                    outcome=encode_error(_changed()),
                )
                raise _changed()
            if not await self._calls.transition(
                call.call_id, (APPROVED,), EXECUTING, updated_ms=now
            ):
                raise errors.ApprovalDenied(f"call {call.call_id} is no longer approved")
            return
        record = new_record(call, EXECUTING, {"reason": "write"}, now)
        if not await self._calls.insert(record):
            raise errors.CallInProgress(
                "another request with this idempotency key is running; retry later"
            )

    async def _end(self, call: Call, state: str, outcome: str) -> None:
        await self._calls.transition(
            call.call_id, (EXECUTING,), state, outcome=outcome, updated_ms=now_ms()
        )


def _changed() -> errors.BrokerError:
    return errors.ApprovalDenied(
        "what this call would execute changed after it was approved (its policy or tool "
        "changed); it was not run: ask again"
    )
