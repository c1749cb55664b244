"""make bench: what the audit trail costs (the same broker with and without its audit stages,
side by side; on the machine as it is, then beside a process keeping half a core busy) and how
fast `broker audit verify` walks 1,000,000 records."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.client import AsyncBrokerClient
from broker.devmode import dev_key_path
from broker.settings import load_settings
from broker.signing import AgentCredentials
from broker.storage.records import AuditQuery, AuditRow
from tests.bench.harness import (
    broker_process,
    cpu_seconds,
    example_upstream,
    machine,
    measure,
    publish,
)
from tests.trail_helpers import opened_trail, query_at, verify_at

QUERY = {"supplier": "ACME Paper"}
# A busy machine, made on purpose: a process of ours spinning 5 ms of every 10 (half a core).
# It stops by itself once the benchmark that started it is gone, or after an hour at most.
_BURNER = """
import os, sys, time
parent, stop = int(sys.argv[1]), time.monotonic() + 3600
while os.getppid() == parent and time.monotonic() < stop:
    began = time.perf_counter()
    while time.perf_counter() - began < 0.005:
        pass
    time.sleep(0.005)
"""


@contextlib.contextmanager
def half_a_core_burning() -> Iterator[None]:
    """Another process keeps half of one core busy meanwhile (as a neighbour would)."""
    burner = subprocess.Popen([sys.executable, "-c", _BURNER, str(os.getpid())])
    try:
        yield
    finally:
        burner.kill()
        burner.wait(timeout=10)


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the audit writer)."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


class Round(NamedTuple):
    """One measured round: calls/s, and CPU a call of the broker and of its audit writer."""

    per_second: float
    broker_us: float
    writer_us: float


async def measured(pid: int, call: Callable[[], Awaitable[None]], total: int) -> Round:
    helpers = children(pid)
    broker, writer = cpu_seconds(pid), sum(map(cpu_seconds, helpers))
    sample = await measure(call, 16, total)
    return Round(
        sample.per_second,
        (cpu_seconds(pid) - broker) / total * 1e6,
        (sum(map(cpu_seconds, helpers)) - writer) / total * 1e6,
    )


async def throughput(rounds: int, total: int) -> dict[str, list[Round]]:
    results: dict[str, list[Round]] = {"with audit": [], "without audit": []}
    with (
        example_upstream() as url,
        tempfile.TemporaryDirectory() as a,
        tempfile.TemporaryDirectory() as b,
        broker_process(Path(a), url) as (with_target, config, with_pid),
        broker_process(Path(b), url, without="audit,received,decided") as (
            without_target,
            _,
            without_pid,
        ),
    ):
        settings = load_settings(config)
        first = AgentCredentials.load(dev_key_path(settings.data_dir, "invoice-agent"))
        second = AgentCredentials.load(dev_key_path(Path(b) / "data", "invoice-agent"))
        async with (
            AsyncBrokerClient(with_target, first, broker_id=settings.broker_id) as w,
            AsyncBrokerClient(without_target, second, broker_id=settings.broker_id) as wo,
        ):
            counter = iter(range(10**9))

            async def audited() -> None:
                await w.call("invoices.list", {"supplier": f"s{next(counter)}"})

            async def unaudited() -> None:
                await wo.call("invoices.list", {"supplier": f"s{next(counter)}"})

            for number in range(rounds):
                # each round measures both, one right after the other, in alternating order:
                # the machine's load drifts, and a pair sees the same drift
                first_with = number % 2 == 0
                for audit in (first_with, not first_with):
                    if audit:
                        results["with audit"].append(await measured(with_pid, audited, total))
                    else:
                        results["without audit"].append(
                            await measured(without_pid, unaudited, total)
                        )
    return results


def table_rows(machine_state: str, results: dict[str, list[Round]]) -> list[str]:
    """The two rows (with, without) of one machine state: medians of the rounds."""

    def median(variant: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[variant])

    return [
        f"| {machine_state} | with the audit trail (3 chained records a call) | "
        f"{median('with audit', 'per_second'):,.0f} | {median('with audit', 'broker_us'):.0f} us "
        f"| {median('with audit', 'writer_us'):.0f} us |",
        f"| {machine_state} | without it | {median('without audit', 'per_second'):,.0f} | "
        f"{median('without audit', 'broker_us'):.0f} us | - |",
    ]


def cost_line(results: dict[str, list[Round]]) -> str:
    """The median of the rounds' own costs, and their range."""
    cost = costs(results)
    return (
        f"**{statistics.median(cost) * 100:.1f}%**, the median of {len(cost)} rounds' own "
        f"costs (from {cost[0] * 100:.1f}% to {cost[-1] * 100:.1f}%)"
    )


def costs(results: dict[str, list[Round]]) -> list[float]:
    """What the audit cost in each round, as a share of the throughput without it."""
    return sorted(
        1 - w.per_second / wo.per_second
        for w, wo in zip(results["with audit"], results["without audit"], strict=True)
    )


async def fill(path: Path, records: int, key: AgentCredentials) -> float:
    """Write ``records`` audit records through the real writer (chained, checkpointed)."""
    key.save(path.with_name("audit.key"))
    row = AuditRow(
        ts_ms=int(time.time() * 1000),
        call_id="c0123456789abcdef",
        rpc="call",
        agent="invoice-agent",
        key_id="invoice-agent-dev",
        nonce="n" * 24,
        tool="invoices.list",
        task_id="t1",
        intent="month end",
        args_digest="d" * 64,
        decision="done",
        reason="",
        upstream_status=200,
        latency_us=900,
        policy_hash="p" * 64,
        detail="{}",
        arguments='{"supplier":"ACME"}',
        event="executed",
    )
    async with opened_trail(path, path.with_name("audit.key")) as trail:
        began = time.perf_counter()
        for _ in range(records // 1000):
            await asyncio.gather(*(trail.append(row) for _ in range(1000)))
        return time.perf_counter() - began


class Trail(NamedTuple):
    """Seconds to write ``records`` records, to verify them, to query them by task (no time
    range: a scan) and by agent within the last hour (the time index); verified ok."""

    written: float
    verified: float
    by_task: float
    by_agent_recent: float
    ok: bool


def verify_speed(records: int) -> Trail:
    key = AgentCredentials("broker-audit", "audit-bench", Ed25519PrivateKey.generate())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "broker.db"
        written = uvloop.run(fill(path, records, key))
        began = time.perf_counter()
        verdict = verify_at(path, key.private_key.public_key())
        verified = time.perf_counter() - began
        began = time.perf_counter()
        query_at(path, AuditQuery({"task_id": "no-such-task"}))
        by_task = time.perf_counter() - began
        began = time.perf_counter()
        since = int(time.time() * 1000) - 3600_000
        query_at(path, AuditQuery({"agent": "no-such-agent"}, since_ms=since))
        by_agent = time.perf_counter() - began
        return Trail(
            written, verified, by_task, by_agent, verdict.ok and verdict.records == records
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    quiet = uvloop.run(throughput(args.rounds, args.calls))
    with half_a_core_burning():
        busy = uvloop.run(throughput(args.rounds, args.calls))
    trail = verify_speed(args.records)
    lines = [
        "## Audit: what it costs, and verifying it",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}.",
        f"Throughput at concurrency 16, median of {args.rounds} rounds, the same broker "
        "(durability fsync) with its audit stages and without them (`audit`, `received`, "
        "`decided` left out "
        "of the order by tests/bench/broker_variant.py), side by side: each round measures "
        "both, one after the other, in alternating order. Every call has its own "
        "arguments. CPU a call: the broker process, and the audit writer process it starts. "
        "Then the same again beside a process that keeps half of one core busy (5 ms of "
        "every 10), as a neighbour on a shared machine would.",
        "",
        "| machine | broker | calls/s at 16 | broker CPU a call | audit writer CPU a call |",
        "|---|---|---|---|---|",
        *table_rows("as it was", quiet),
        *table_rows("half a core busy", busy),
        "",
        f"- what the audit costs in throughput (target < 10%): {cost_line(quiet)}",
        f"- the same beside the busy half core: {cost_line(busy)}",
        f"- {args.records:,} records written through the store in {trail.written:.1f} s "
        f"({args.records / trail.written:,.0f} records/s, chained and checkpointed)",
        f"- `verify` walked them in **{trail.verified:.1f} s** "
        f"({args.records / trail.verified:,.0f} records/s){'' if trail.ok else '; IT FAILED'}",
        f"- `audit query --task` with no time range (a scan: there is no task index) "
        f"{trail.by_task:.2f} s; `--agent` with `--since 1h` (the time index) "
        f"{trail.by_agent_recent * 1000:.1f} ms",
    ]
    section = "\n".join(lines) + "\n"
    publish(section, args.write)


if __name__ == "__main__":
    main()
