"""Prometheus metrics of one broker (prometheus-client, a registry per broker so several can
live in one process): calls by agent, tool, outcome and reason; latency per request and per
stage; upstream statuses; rate-limit hits; pending approvals; budget use. Served at
``/metrics`` on the HTTP side."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from broker.store import AuditRow

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
        self.latency = Histogram(
            "toolbroker_request_seconds",
            "Time from a request's arrival to its answer.",
            ["rpc"],
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.stages = StageTimes()
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
        self._counters: dict[tuple[str, ...], Counter] = {}
        self._latencies: dict[str, Histogram] = {}
        self.budget = Gauge(
            "toolbroker_budget_used_ratio",
            "Share of each budget used in its current period.",
            ["scope"],
            registry=self.registry,
        )

    def observe(self, row: AuditRow) -> None:
        """Count a request's final audit record."""
        key = (row.rpc, row.agent or "-", row.tool or "-", row.decision, row.reason or "-")
        counter = self._counters.get(key)
        if counter is None:  # labels() validates and locks: once per label set, not per call
            counter = self._counters[key] = self.calls.labels(*key)
        counter.inc()
        latency = self._latencies.get(row.rpc)
        if latency is None:
            latency = self._latencies[row.rpc] = self.latency.labels(row.rpc)
        latency.observe(row.latency_us / 1e6)
        if row.upstream_status is not None:
            self.upstream.labels(row.tool.split(".", 1)[0], str(row.upstream_status)).inc()
        if row.reason in _RATE_REASONS:
            self.limited.labels(row.tool.split(".", 1)[0], row.reason).inc()

    def stage_time(self, stage: str, seconds: float) -> None:
        """How long a stage took (the stages after it included)."""
        self.stages.observe(stage, seconds)

    def budget_used(self, scope: str, ratio: float) -> None:
        """A budget's use changed."""
        self.budget.labels(scope).set(ratio)

    def pending_from(self, count: Callable[[], int]) -> None:
        """Read the number of pending calls when scraped."""
        self.pending.set_function(lambda: float(count()))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class StageTimes(Collector):
    """Per-stage latency histograms, kept by hand: observed around every stage of every
    request, so each observation must be cheap (a bisect and two additions, where
    prometheus-client's histogram takes a lock and walks its buckets); exposed as ordinary
    histograms when scraped."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, stage: str, seconds: float) -> None:
        """Count one stage's time."""
        counts = self._counts.get(stage)
        if counts is None:
            counts = self._counts[stage] = [0] * (len(_LATENCY) + 1)
            self._sums[stage] = 0.0
        counts[bisect.bisect_left(_LATENCY, seconds)] += 1
        self._sums[stage] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histograms, for a scrape."""
        family = HistogramMetricFamily(
            "toolbroker_stage_seconds",
            "Time inside each stage, the stages after it included.",
            labels=["stage"],
        )
        for stage, counts in sorted(self._counts.items()):
            cumulative, running = [], 0
            for bound, count in zip([*map(str, _LATENCY), "+Inf"], counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([stage], cumulative, self._sums[stage])
        yield family
