"""Records of steps outside a request: a call approved, denied, expired, cancelled,
reconciled, found without an outcome; an agent frozen."""

from __future__ import annotations

import json
import time
from typing import Any

from broker.storage.records import AuditRow

_COMPACT = json.JSONEncoder(separators=(",", ":"))


def event_row(
    event: str,
    *,
    call_id: str,
    agent: str,
    tool: str = "",
    task_id: str = "",
    intent: str = "",
    by: str = "",
    reason: str = "",
    detail: dict[str, Any] | None = None,
    policy_hash: str = "",
    nonce: str = "",
) -> AuditRow:
    """The record of one such step; ``by`` says who (a person, a Slack user or the broker)."""
    facts = dict(detail or {})
    if by:
        facts["by"] = by
    return AuditRow(
        ts_ms=time.time_ns() // 1_000_000,
        call_id=call_id,
        rpc="event",
        agent=agent,
        key_id="",
        nonce=nonce,  # a console sign-in link's id: claimed once, remembered after a restart
        tool=tool,
        task_id=task_id,
        intent=intent[:2048],
        args_digest="",
        decision=event,
        reason=reason,
        upstream_status=None,
        latency_us=0,
        policy_hash=policy_hash,
        detail=_COMPACT.encode(facts),
        event=event,
    )
