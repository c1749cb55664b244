"""The daily digest: per agent, what it did on one UTC day, from the audit trail, and whether
its calls or cost jumped past 3x its median of the 7 days before. Text or Markdown."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from broker.policy.model import Policy
from broker.storage.interfaces import AuditReader
from broker.storage.records import AuditQuery, AuditRow

FINAL_EVENTS = ("executed", "refused", "failed", "pending", "replayed")
ADMIN_RPCS = ("freeze", "unfreeze", "list_approvals", "decide", "reconcile")
ANOMALY_FACTOR = 3
HISTORY_DAYS = 7


@dataclass
class AgentDay:
    """One agent's day."""

    agent: str
    calls: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    asked: int = 0
    granted: int = 0
    denied: int = 0
    expired: int = 0
    decision_seconds: list[float] = field(default_factory=list)
    upstream_429: int = 0
    errors: int = 0
    cost: int = 0
    cost_budget: int | None = None
    calls_budget: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    tools: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)

    @property
    def median_decision(self) -> float | None:
        """Median seconds from the question to a human's decision."""
        return statistics.median(self.decision_seconds) if self.decision_seconds else None

    def latency(self, share: float) -> float | None:
        """A latency percentile in ms (nearest rank)."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def day_bounds(day: date) -> tuple[int, int]:
    """A UTC day in unix milliseconds: [start, end)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


async def daily(
    audit: AuditReader, day: date, policies: dict[str, Policy] | None = None
) -> list[AgentDay]:
    """The digest of ``day``, busiest agent first."""
    start, end = day_bounds(day)
    history_start = start - HISTORY_DAYS * 86_400_000
    rows = await audit.query(AuditQuery(since_ms=history_start - 86_400_000, until_ms=end))
    asked_at = {row.call_id: row.ts_ms for row in rows if row.event == "pending"}
    today: dict[str, AgentDay] = {}
    calls_by_day: dict[str, Counter[int]] = defaultdict(Counter)
    cost_by_day: dict[str, Counter[int]] = defaultdict(Counter)
    for row in rows:
        if not row.agent or row.ts_ms < history_start or row.rpc in ADMIN_RPCS:
            continue  # operators' requests are not an agent's day
        index = (row.ts_ms - history_start) // 86_400_000  # 0..6 the week before, 7 today
        if row.rpc == "call" and row.event in FINAL_EVENTS:
            calls_by_day[row.agent][index] += 1
        cost_by_day[row.agent][index] += row.cost
        if row.ts_ms >= start:
            _count(today.setdefault(row.agent, AgentDay(row.agent)), row, asked_at)
    for agent, stats in today.items():
        policy = (policies or {}).get(agent)
        if policy is not None:
            stats.cost_budget = policy.limits.cost_per_day
            stats.calls_budget = policy.limits.calls_per_day
        for what, counts, value in (
            ("calls", calls_by_day[agent], stats.calls),
            ("cost units", cost_by_day[agent], stats.cost),
        ):
            median = statistics.median(counts.get(i, 0) for i in range(HISTORY_DAYS))
            if value > ANOMALY_FACTOR * max(median, 1):
                stats.anomalies.append(
                    f"{what} {value} is more than {ANOMALY_FACTOR}x the 7-day median ({median:g})"
                )
    return sorted(today.values(), key=lambda s: (-s.calls, s.agent))


def _count(stats: AgentDay, row: AuditRow, asked_at: dict[str, int]) -> None:
    if row.rpc == "call" and row.event in FINAL_EVENTS:
        stats.calls += 1
        stats.tools[row.tool] += 1
        stats.latencies_ms.append(row.latency_us / 1000)
        if row.decision == "refused":
            stats.refusals[row.reason] += 1
        if row.decision in ("failed", "tool_error"):
            stats.errors += 1
        if row.reason == "UPSTREAM_RATE_LIMITED":
            stats.upstream_429 += 1
    if row.event == "pending":
        stats.asked += 1
    if row.event == "approved":
        stats.granted += 1
    elif row.event == "denied":
        stats.denied += 1
    elif row.event == "expired":
        stats.expired += 1
    if row.event in ("approved", "denied") and row.call_id in asked_at:
        stats.decision_seconds.append((row.ts_ms - asked_at[row.call_id]) / 1000)
    stats.cost += row.cost


def render(report: list[AgentDay], day: date, markdown: bool) -> str:
    """The digest for people: plain text, or Markdown for Slack or a wiki."""
    title = f"Agents on {day.isoformat()} (UTC)"
    if not report:
        return f"{'## ' if markdown else ''}{title}\n\nNo agent made a call.\n"
    lines = [f"## {title}" if markdown else title, ""]
    for stats in report:
        lines.append(f"### {stats.agent}" if markdown else f"{stats.agent}")
        bullet = "- " if markdown else "  "
        for line in _lines(stats):
            lines.append(bullet + line)
        lines.append("")
    return "\n".join(lines)


def _lines(stats: AgentDay) -> list[str]:
    refusals = ", ".join(f"{reason} {n}" for reason, n in stats.refusals.most_common()) or "none"
    median = stats.median_decision
    decided = f"{median:.0f}s median to a decision" if median is not None else "no decision"
    p50, p99 = stats.latency(0.5), stats.latency(0.99)
    latency = (
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms" if p50 is not None and p99 is not None else "no calls"
    )
    budget = f" of {stats.cost_budget}" if stats.cost_budget is not None else ""
    calls_budget = f" of {stats.calls_budget}" if stats.calls_budget is not None else ""
    tools = ", ".join(f"{tool} {n}" for tool, n in stats.tools.most_common(3)) or "none"
    lines = [
        f"calls: {stats.calls}{calls_budget}; refusals: {refusals}",
        f"approvals: {stats.asked} asked, {stats.granted} granted, {stats.denied} denied, "
        f"{stats.expired} expired; {decided}",
        f"upstream 429s: {stats.upstream_429}; errors: {stats.errors}",
        f"cost units: {stats.cost}{budget}; latency {latency}",
        f"top tools: {tools}",
    ]
    lines += [f"ANOMALY: {anomaly}" for anomaly in stats.anomalies]
    return lines
