"""Stage ``audit``: every request, allowed or refused, leaves a durable record before its answer.

It is the outermost stage: it sees every outcome and every error, records it in ``finally`` and
re-raises. If the record cannot be written the caller gets AUDIT_UNAVAILABLE instead of the
answer (fail closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

from broker import errors
from broker.pipeline import Call, Handler, Outcome
from broker.store import AuditRow, Store, StoreError
from broker.v1 import broker_pb2 as pb

log = logging.getLogger(__name__)
MAX_ARGUMENTS = 64 * 1024  # recorded as sent up to this size; the digest is always kept

_DECISION: dict[int, str] = {
    pb.CallResult.DONE: "done",
    pb.CallResult.TOOL_ERROR: "tool_error",
    pb.CallResult.PENDING_APPROVAL: "pending",
}
_FAILED = (errors.Unavailable, errors.DeadlineExceeded, errors.Unknown, errors.Internal)


class AuditStage:
    """Appends one audit row per request (call_id, agent, key, tool, argument digest, decision,
    reason, upstream status, latency, task, intent, policy hash)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        outcome: Outcome | None = None
        failure: BaseException | None = None
        try:
            outcome = await call_next(call)
            return outcome
        except BaseException as exc:
            failure = exc
            raise
        finally:
            try:
                await self._store.append_audit(audit_row(call, outcome, failure))
            except StoreError as exc:
                log.error("audit write failed for call %s: %s", call.call_id, exc)
                raise errors.AuditUnavailable(
                    f"the audit record of call {call.call_id} could not be written, so the "
                    "answer is withheld; an operator must check the broker's database"
                ) from None


def audit_row(call: Call, outcome: Outcome | None, failure: BaseException | None) -> AuditRow:
    """The record of one request, from what the stages learned."""
    request = call.request
    decision, reason, detail = _decision(outcome, failure)
    if call.credentials:  # names and fingerprints, never values
        detail["credentials"] = [
            {"slot": c.slot, "secret": c.secret.name, "fingerprint": c.secret.fingerprint}
            for c in call.credentials
        ]
    return AuditRow(
        ts_ms=time.time_ns() // 1_000_000,
        call_id=call.call_id,
        rpc=call.rpc,
        agent=call.verified.agent if call.verified else "",
        key_id=call.signed.key_id[:128],
        nonce=call.verified.envelope.nonce if call.verified else "",
        tool=request.tool[:128],
        task_id=request.task_id[:256],
        intent=request.intent[:2048],
        args_digest=call.args_digest or _raw_digest(request.arguments_json),
        decision=decision,
        reason=reason,
        upstream_status=(outcome.upstream_status or None) if outcome else None,
        latency_us=(time.perf_counter_ns() - call.started_ns) // 1000,
        policy_hash=call.snapshot.policies.digest,
        detail=json.dumps(detail, separators=(",", ":")),
        arguments=request.arguments_json if len(request.arguments_json) <= MAX_ARGUMENTS else "",
    )


def _decision(
    outcome: Outcome | None, failure: BaseException | None
) -> tuple[str, str, dict[str, object]]:
    if isinstance(failure, errors.BrokerError):
        decision = "failed" if isinstance(failure, _FAILED) else "refused"
        return decision, failure.reason, {"message": failure.message}
    if isinstance(failure, asyncio.CancelledError):
        return "cancelled", "CANCELLED", {}
    if failure is not None:
        return "failed", errors.InternalError.reason, {"error": type(failure).__name__}
    assert outcome is not None
    detail: dict[str, object] = {}
    if outcome.tools is not None:
        detail["tools"] = len(outcome.tools)
    if outcome.findings:
        detail["findings"] = [
            {"kind": f.kind, "path": f.path, "detail": f.detail} for f in outcome.findings
        ]
    return _DECISION.get(outcome.state, "done"), "", detail


def _raw_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest() if text else ""
