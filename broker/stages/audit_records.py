"""Stages ``audit``, ``received`` and ``decided``: the audit trail of every request, step by
step.

``audit`` is the outermost stage: it sees every outcome and every error, appends the request's
final record in ``finally`` and re-raises; if the record cannot be written the caller gets
AUDIT_UNAVAILABLE instead of the answer. ``received`` records a call's arrival once its
signature checks out. ``decided`` sits just before a call goes to its tool
and appends the decision to run it first: if that fails, nothing runs (fail closed). Records
are hash-chained, and each request's JSON log line written, by the audit writer
(``broker.audit.writer``); ``audit_row`` here says what goes in a record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from broker import errors
from broker.approvals.call_events import CallEvents
from broker.audit.trail import AuditTrail, unavailable
from broker.outcome import digest_of
from broker.pipeline import Call, Handler, Outcome
from broker.storage.records import STEP_EVENTS, AuditRow, StoreError
from broker.v1 import broker_pb2 as pb

log = logging.getLogger(__name__)
MAX_ARGUMENTS = 64 * 1024  # recorded as sent up to this size; the digest is always kept
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps makes one a call

_DECISION: dict[int, str] = {
    pb.CallResult.DONE: "done",
    pb.CallResult.TOOL_ERROR: "tool_error",
    pb.CallResult.PENDING_APPROVAL: "pending",
}
_FAILED = (errors.Unavailable, errors.DeadlineExceeded, errors.Unknown, errors.Internal)
Observer = Callable[[AuditRow], None]


class AuditStage:
    """Appends the final record of every request (who, which key, which tool, the argument
    digest, the decision and reason, the upstream status, the digest and size of the redacted
    result, findings, latency, task, intent, the policy set's hash). ``observe`` feeds the
    metrics; ``events`` wakes whoever Awaits the call, once its record is written."""

    needs = frozenset[str]()
    provides = frozenset[str]()

    def __init__(
        self, trail: AuditTrail, observe: Observer | None = None, events: CallEvents | None = None
    ) -> None:
        self._trail = trail
        self._observe = observe
        self._events = events

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        outcome: Outcome | None = None
        failure: BaseException | None = None
        try:
            outcome = await call_next(call)
            return outcome
        except StoreError as exc:
            # the state's database failed under this call: a refusal the agent may retry,
            # without the database's name (the log has it)
            log.error("call %s: the state database failed: %s", call.call_id, exc)
            failure = errors.StoreUnavailable(
                "the broker's state database is unavailable; retry later"
            )
            raise failure from None
        except BaseException as exc:
            failure = exc
            raise
        finally:
            row = audit_row(call, outcome, failure)
            await self._trail.record(row, call.call_id, after=call.received)
            if self._observe is not None:
                self._observe(row)
            if self._events is not None:
                # a write is a stored call that another replica's Await may wait for
                write = call.has("action") and call.action.is_write
                self._events.wake(call.call_id, everywhere=write)


class ReceivedStage:
    """Records that a call arrived, right after its signature checked out: who, with which
    key, which tool, task and intent, and the arguments as sent. Nobody waits for it here:
    the record leaves with the next batch, and the decision to run the call (or its final
    record, if it stops before) waits for it, so a call whose arrival could not be recorded
    never runs and never gets an answer."""

    needs = frozenset({"verified"})
    provides = frozenset[str]()

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        try:
            call.received = self._trail.queue(audit_row(call, None, None, "received"))
        except StoreError as exc:
            raise unavailable(call.call_id, exc) from None
        return await call_next(call)


class DecidedStage:
    """Records the decision to run a call before it leaves for its tool: an audit that cannot
    be written (a full disk, a read-only or locked database) stops the call here, with
    AUDIT_UNAVAILABLE, and nothing runs. It waits for the record's commit, not its fsync: the
    call's final record, fsynced before the answer leaves, carries this one to disk with it
    (one fsync a call, not two: measured in BENCHMARKS.md)."""

    needs = frozenset({"verified", "action"})
    provides = frozenset[str]()

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        row = audit_row(call, None, None, event="decided")
        await self._trail.record(row, call.call_id, durable=False, after=call.received)
        return await call_next(call)


def audit_row(
    call: Call, outcome: Outcome | None, failure: BaseException | None, event: str = ""
) -> AuditRow:
    """The record of one request (or of one step of it), from what the stages learned."""
    request = call.request
    arguments = request.arguments_json  # protobuf makes a new str at every read
    detail: dict[str, object]
    # the arguments as sent go in the `received` record; later records repeat them only when
    # that record is not in the trail (the call failed before it, or it could not be written)
    sent = event == "received" or (event != "decided" and not _in_trail(call.received))
    if event in STEP_EVENTS:
        decision, reason, detail = "allowed" if event == "decided" else event, "", {}
    else:
        decision, reason, detail = _decision(outcome, failure)
        event = _event(call, outcome, failure)
    if call.has("verified") and call.verified.envelope.front:
        detail["front"] = call.verified.envelope.front  # who signed for the agent (mcp)
    if call.credentials:  # names and fingerprints, never values
        detail["credentials"] = [
            {"slot": c.slot, "secret": c.secret.name, "fingerprint": c.secret.fingerprint}
            for c in call.credentials
        ]
    result_digest, result_size = outcome.result_digest() if outcome else ("", 0)
    return AuditRow(
        ts_ms=time.time_ns() // 1_000_000,
        call_id=outcome.call_id if outcome and outcome.call_id else call.call_id,
        rpc=call.rpc,
        agent=call.agent,
        key_id=call.signed.key_id[:128],
        nonce=call.verified.envelope.nonce if call.has("verified") and event != "decided" else "",
        tool=request.tool[:128],
        task_id=request.task_id[:256],
        intent=request.intent[:2048],
        args_digest=call.args_digest or _raw_digest(arguments),
        decision=decision,
        reason=reason,
        upstream_status=(outcome.upstream_status or None) if outcome else None,
        latency_us=(time.perf_counter_ns() - call.started_ns) // 1000,
        policy_hash=call.snapshot.policies.digest,
        detail=_COMPACT.encode(detail) if detail else "{}",
        arguments=arguments if sent and len(arguments) <= MAX_ARGUMENTS else "",
        event=event,
        cost=call.action.spec.cost if event == "decided" and call.has("action") else 0,
        result_digest=result_digest,
        result_size=result_size,
    )


def _in_trail(record: asyncio.Future[None] | None) -> bool:
    """True when a queued record was written."""
    return (
        record is not None
        and record.done()
        and not record.cancelled()
        and record.exception() is None
    )


def _event(call: Call, outcome: Outcome | None, failure: BaseException | None) -> str:
    if call.rpc != "call":
        return call.rpc
    if failure is not None:
        return "failed" if isinstance(failure, _FAILED) else "refused"
    assert outcome is not None
    if outcome.state == pb.CallResult.PENDING_APPROVAL:
        return "pending"
    if outcome.call_id and outcome.call_id != call.call_id:
        return "replayed"  # an idempotent retry answered from the store
    return "executed"


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
    if outcome.untrusted_paths:
        detail["untrusted_paths"] = list(outcome.untrusted_paths)
    if outcome.findings:
        detail["findings"] = [
            {"kind": f.kind, "path": f.path, "detail": f.detail} for f in outcome.findings
        ]
    return _DECISION.get(outcome.state, "done"), "", detail


def _raw_digest(text: str) -> str:
    return digest_of(text)[0]
