"""The story of one call from its audit records and its stored row: who asked for what, why a
human was asked, every step, who decided, what came back. ``broker audit show`` prints it; the
web console renders the same story."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from broker.audit.checkpoints import iso_time
from broker.storage.records import AuditRow, CallRecord


def record_json(row: AuditRow) -> str:
    """One record as a JSON line (its detail parsed, its time readable): what ``broker audit
    export`` and the console's export write."""
    data = row._asdict()
    data["time"] = iso_time(row.ts_ms)
    data["detail"] = json.loads(row.detail) if row.detail else {}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Step:
    """One audit record of the call, in words."""

    ts_ms: int
    seq: int
    what: str  # the event or RPC
    decision: str
    facts: list[str]
    latency_ms: float | None


@dataclass(frozen=True)
class Story:
    """A call's facts (in order, for people) and its steps, oldest first."""

    call_id: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


def call_story(call_id: str, rows: list[AuditRow], record: CallRecord | None) -> Story:
    """The story of ``call_id``; ``rows`` are its audit records in chain order."""
    story = Story(call_id)
    first = rows[0] if rows else None
    if first is not None:
        story.facts.extend(
            [
                ("agent", f"{first.agent} (key {first.key_id or '-'})"),
                ("tool", first.tool),
                ("task", first.task_id or "-"),
                ("intent", first.intent or "-"),
                ("arguments", first.arguments or "(not recorded: too large)"),
                ("arguments digest", first.args_digest or "-"),
                ("policy set", first.policy_hash[:16]),
            ]
        )
    if record is not None:
        why = json.loads(record.why) if record.why else {}
        story.facts.append(
            (
                "stored call",
                record.state
                + (f", decided by {record.decided_by}" if record.decided_by else "")
                + (f" ({record.note})" if record.note else ""),
            )
        )
        if why.get("message"):
            story.facts.append(("why a human was asked", str(why["message"])))
        for path, value, origin in why.get("tainted", []):
            story.facts.append(("untrusted value", f"{path} = {value!r}, from {origin}"))
    story.steps.extend(_step(row) for row in rows)
    return story


def _step(row: AuditRow) -> Step:
    detail = json.loads(row.detail) if row.detail else {}
    facts = []
    if row.reason:
        facts.append(row.reason)
    if row.upstream_status:
        facts.append(f"upstream {row.upstream_status}")
    if row.result_size:
        facts.append(f"result {row.result_size} bytes sha256 {row.result_digest[:12]}")
    if row.cost:
        facts.append(f"cost {row.cost}")
    if detail.get("by"):
        facts.append(f"by {detail['by']}")
    for key in ("message", "note", "reason"):
        if detail.get(key):
            facts.append(str(detail[key]))
    if detail.get("front"):
        facts.append(f"through {detail['front']}")
    for finding in detail.get("findings", []):
        facts.append(f"finding {finding['kind']} at {finding['path']}: {finding['detail']}")
    if detail.get("untrusted_paths"):
        facts.append("untrusted: " + ", ".join(map(str, detail["untrusted_paths"])))
    latency = row.latency_us / 1000 if row.latency_us else None
    return Step(row.ts_ms, row.seq, row.event or row.rpc, row.decision, facts, latency)
