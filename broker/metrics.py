"""Prometheus metrics of one broker (prometheus-client, a registry per broker so several can
live in one process): calls by agent, tool, outcome and reason; latency per request and per
stage; upstream statuses; rate-limit hits; pending approvals; budget use; audit witnesses.
Served at ``/metrics`` on the HTTP side."""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from broker.storage.records import AuditRow

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_RATE_REASONS = ("RATE_LIMITED", "UPSTREAM_RATE_LIMITED")


class Metrics:
    """The broker's instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "toolbroker_calls",
            "Requests by agent, tool, outcome (the audit decision) and reason.",
            ["rpc", "agent", "tool", "outcome", "reason"],
            registry=self.registry,
        )
        self.latency = LatencyHistograms(
            "toolbroker_request_seconds", "Time from a request's arrival to its answer.", "rpc"
        )
        self.registry.register(self.latency)
        self.stages = LatencyHistograms(
            "toolbroker_stage_seconds",
            "Time inside each stage, the stages after it included.",
            "stage",
        )
        self.registry.register(self.stages)
        self.upstream = Counter(
            "toolbroker_upstream_responses",
            "Answers of upstream tools by status (HTTP status or exit code).",
            ["tool", "status"],
            registry=self.registry,
        )
        self.limited = Counter(
            "toolbroker_rate_limited",
            "Calls refused by a local limit (RATE_LIMITED) or because the upstream said slow "
            "down (UPSTREAM_RATE_LIMITED).",
            ["tool", "reason"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "toolbroker_pending_approvals", "Calls waiting for a human.", registry=self.registry
        )
        self._pending_count: Callable[[], Awaitable[int]] | None = None
        self._counters: dict[tuple[object, ...], Counter] = {}  # labels() once per label set
        self.budget = Gauge(
            "toolbroker_budget_used_ratio",
            "Share of each budget used in its current period.",
            ["scope"],
            registry=self.registry,
        )

        self.witness_waiting = Gauge(
            "toolbroker_audit_witness_waiting",
            "Signed audit checkpoints a witness has not taken yet.",
            ["witness"],
            registry=self.registry,
        )
        self.witness_down = Gauge(
            "toolbroker_audit_witness_down",
            "1 while a witness's last attempt failed.",
            ["witness"],
            registry=self.registry,
        )
        self.witness_failures = Gauge(
            "toolbroker_audit_witness_failures",
            "Failed attempts to hand a witness a checkpoint, since the audit writer started.",
            ["witness"],
            registry=self.registry,
        )

    def witness_state(self, state: dict[str, Any]) -> None:
        """How a witness is doing, as the audit writer reported it."""
        name = str(state.get("witness", "?"))
        self.witness_waiting.labels(name).set(float(state.get("waiting", 0)))
        self.witness_down.labels(name).set(1.0 if state.get("down") else 0.0)
        self.witness_failures.labels(name).set(float(state.get("failures", 0)))

    def observe(self, row: AuditRow) -> None:
        """Count a request's final audit record."""
        self._child(
            self.calls, row.rpc, row.agent or "-", row.tool or "-", row.decision, row.reason or "-"
        ).inc()
        self.latency.observe(row.rpc, row.latency_us / 1e6)
        if row.upstream_status is not None:
            self._child(self.upstream, row.tool.split(".", 1)[0], str(row.upstream_status)).inc()
        if row.reason in _RATE_REASONS:
            self._child(self.limited, row.tool.split(".", 1)[0], row.reason).inc()

    def _child(self, counter: Counter, *labels: str) -> Counter:
        """A counter's child for these labels: prometheus-client validates and locks on every
        labels() call, so each label set is looked up once."""
        key = (id(counter), *labels)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = counter.labels(*labels)
        return child

    def stage_time(self, stage: str, seconds: float) -> None:
        """How long a stage took (the stages after it included)."""
        self.stages.observe(stage, seconds)

    def budget_used(self, scope: str, ratio: float) -> None:
        """A budget's use changed."""
        self.budget.labels(scope).set(ratio)

    def pending_from(self, count: Callable[[], Awaitable[int]]) -> None:
        """Where to read the number of pending calls when scraped."""
        self._pending_count = count

    async def render(self) -> bytes:
        """The exposition text (the pending calls counted now)."""
        if self._pending_count is not None:
            self.pending.set(await self._pending_count())
        return generate_latest(self.registry)


class LatencyHistograms(Collector):
    """Latency histograms by one label, kept by hand: observed for every request and around
    every stage, so each observation must be cheap (a bisect and two additions, where
    prometheus-client's histogram takes a lock and walks its buckets); exposed as ordinary
    histograms when scraped."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, value: str, seconds: float) -> None:
        """Count one observation for the label ``value``."""
        counts = self._counts.get(value)
        if counts is None:
            counts = self._counts[value] = [0] * (len(_LATENCY) + 1)
            self._sums[value] = 0.0
        counts[bisect.bisect_left(_LATENCY, seconds)] += 1
        self._sums[value] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histograms, for a scrape."""
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for stage, counts in sorted(self._counts.items()):
            cumulative, running = [], 0
            for bound, count in zip([*map(str, _LATENCY), "+Inf"], counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([stage], cumulative, self._sums[stage])
        yield family
