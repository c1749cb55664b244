"""Re-deciding recorded calls under proposed policies: what would this change have done to
yesterday's traffic?"""

from __future__ import annotations

from dataclasses import dataclass

from broker import errors
from broker.policy.evaluate import Decision, PolicySet
from broker.storage.interfaces import AuditReader
from broker.storage.records import STEP_EVENTS, AuditQuery, AuditRow

# Refusals that the policy made; any other refusal happened after the policy allowed the call.
_POLICY_DENIALS = {
    errors.UnknownTool.reason,
    errors.ToolNotGranted.reason,
    errors.InvalidArguments.reason,
    errors.ArgumentNotAllowed.reason,
}
_HUMAN = {"pending", "approved", "denied", "expired"}
_HUMAN_REASONS = {errors.ApprovalDenied.reason, errors.ApprovalExpired.reason}


@dataclass(frozen=True)
class Replayed:
    """A recorded call whose decision would change."""

    row: AuditRow
    was: str
    now: Decision


@dataclass(frozen=True)
class ReplayReport:
    """How many calls were re-decided, which would change, and which could not be."""

    decided: int
    changed: list[Replayed]
    skipped: int  # arguments too large to have been recorded


def recorded_outcome(row: AuditRow, ran: bool = False) -> str | None:
    """What the policy said at the time: allow, approval or deny REASON; None when the call
    never reached the policy (it failed authentication). ``ran``: the call has a ``decided``
    record, so the policy let it run and a refusal after that (a path the command adapter
    refused) was not the policy's."""
    if row.rpc != "call" or not row.agent or row.event in (*STEP_EVENTS, "replayed"):
        return None  # one verdict per call: its final record
    if row.decision in _HUMAN or row.reason in _HUMAN_REASONS:
        return "approval"
    if row.decision == "refused" and row.reason in _POLICY_DENIALS and not ran:
        return f"deny {row.reason}"
    return "allow"


async def replay(audit: AuditReader, policies: PolicySet, since_ms: int) -> ReplayReport:
    """Re-decide every call recorded since ``since_ms``; list those whose decision changes."""
    decided = skipped = 0
    changed: list[Replayed] = []
    rows = await audit.query(AuditQuery(since_ms=since_ms))
    sent = {row.call_id: row.arguments for row in rows if row.event == "received"}
    ran = {row.call_id for row in rows if row.event == "decided"}
    verdicts: set[str] = set()
    for row in rows:
        was = recorded_outcome(row, row.call_id in ran)
        # the first verdict is the policy's: an approved call's run records one more
        if was is None or row.call_id in verdicts:
            continue
        verdicts.add(row.call_id)
        arguments = row.arguments or sent.get(row.call_id)
        if arguments is None:  # the call arrived before ``since_ms``
            arguments = await _sent(audit, row.call_id)
        if not arguments and row.args_digest:
            skipped += 1
            continue
        decision = policies.decide(row.agent, row.tool, arguments)
        decided += 1
        now = decision.outcome if decision.outcome != "deny" else f"deny {decision.reason}"
        if now != was:
            changed.append(Replayed(row, was, decision))
    return ReplayReport(decided, changed, skipped)


async def _sent(audit: AuditReader, call_id: str) -> str:
    """The arguments a call's ``received`` record kept ("" if none: too large, or no record)."""
    query = AuditQuery(equals={"call_id": call_id, "event": "received"})
    received = await audit.query(query)
    return received[0].arguments if received else ""
