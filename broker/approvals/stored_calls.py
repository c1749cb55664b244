"""How a call is kept: the digest that binds an approval to exactly what will run, and its
outcome (a result or an error) as stored JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from broker import errors, jsonexact
from broker.pipeline import Call, Outcome
from broker.storage.records import CallRecord
from broker.v1 import broker_pb2 as pb

# States of a stored call, and which of them are final.
PENDING, APPROVED, EXECUTING = "pending", "approved", "executing"
DONE, TOOL_ERROR, FAILED = "done", "tool_error", "failed"
DENIED, EXPIRED, CANCELLED, UNKNOWN = "denied", "expired", "cancelled", "outcome_unknown"
RECONCILED = "reconciled"  # outcome_unknown, checked by a human
FINAL = (DONE, TOOL_ERROR, FAILED, DENIED, EXPIRED, CANCELLED, UNKNOWN, RECONCILED)


def new_record(call: Call, state: str, why: Mapping[str, object], now: int) -> CallRecord:
    """The stored form of ``call`` as it enters the calls table in ``state``."""
    return CallRecord(
        call_id=call.call_id,
        agent=call.agent,
        key_id=call.signed.key_id,
        tool=call.request.tool,
        task_id=call.request.task_id,
        intent=call.request.intent,
        arguments=jsonexact.dumps(call.arguments, canonical=True),
        digest=call.digest,
        idempotency_key=call.request.idempotency_key,
        state=state,
        why=json.dumps(why),
        created_ms=now,
        updated_ms=now,
    )


def binding_digest(call: Call) -> str:
    """SHA-256 over what will execute: agent, tool, arguments and the secret behind each
    credential slot. An approval (and an idempotency key) holds for this digest only."""
    policy = call.snapshot.policies.policies.get(call.agent)
    tool = call.action.tool
    secrets = {
        slot: (policy.secret_for(tool.name, slot) if policy else None) or ""
        for slot in sorted(tool.credentials)
    }
    return jsonexact.digest(
        {
            "agent": call.agent,
            "tool": call.action.full_name,
            "arguments": call.arguments,
            "credentials": secrets,
        }
    )


def encode_outcome(outcome: Outcome) -> str:
    """A finished call's result, as stored (already redacted)."""
    return json.dumps(
        {
            "state": int(outcome.state),
            "result_json": outcome.result_json,
            "upstream_status": outcome.upstream_status,
            "findings": [
                {"kind": f.kind, "path": f.path, "detail": f.detail} for f in outcome.findings
            ],
        }
    )


def encode_error(error: errors.BrokerError) -> str:
    """A failed call's error, as stored (already redacted)."""
    return json.dumps({"error": {"reason": error.reason, "message": error.message}})


def decode(stored: str, call_id: str) -> Outcome:
    """The stored outcome again; a stored error is raised as the same error."""
    data = json.loads(stored)
    if "error" in data:
        cls = errors.BrokerError.for_reason(data["error"]["reason"]) or errors.InternalError
        raise cls(data["error"]["message"])
    return Outcome(
        state=data["state"],
        result_json=data["result_json"],
        upstream_status=data["upstream_status"],
        findings=[pb.Finding(**f) for f in data["findings"]],
        call_id=call_id,
    )


def why_in_words(why: Mapping[str, Any]) -> str:
    """Why a human is asked about a stored call, in words, from its ``why``: Slack and the
    console say the same (each escapes it its own way)."""
    reason = str(why.get("reason", ""))
    message = str(why.get("message", ""))
    if reason == "write":
        return "it is a write"
    if reason == "tainted":
        return message or "arguments carry values from untrusted content"
    if reason == "condition":
        return message or "a condition of the policy holds"
    return message or reason or "the policy asks for a human"
