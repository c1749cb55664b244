"""make bench: where the broker's time goes. The same call through brokers that each leave out
some stages, side by side in one run; the broker process's own CPU time per call is the figure
that matters on a shared machine (the broker serves on one event loop, so at concurrency 16 it
is CPU-bound and its throughput is about one second divided by it)."""

from __future__ import annotations

import datetime
import statistics
import tempfile
from contextlib import ExitStack, suppress
from pathlib import Path

import broker.pipeline as pipeline
from broker.client import AsyncBrokerClient
from broker.errors import BrokerError
from tests.bench.bench_call_path import QUERY, _key
from tests.bench.harness import (
    broker_process,
    cpu_seconds,
    example_upstream,
    machine,
    measure,
    run_call_bench,
)

# Each layer adds stages to the one before; the last is the broker as shipped.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("no stages (gRPC, the SDK, signing; answered with an error at once)", frozenset()),
    ("verify, grant, validate, execute", frozenset({"verify", "grant", "validate", "execute"})),
    (
        "+ freeze, constrain, idempotency, loops, budget, rate limit, confirm, journal, "
        "retry, circuit",
        frozenset(
            {"freeze", "constrain", "idempotency", "loops", "budget", "ratelimit", "confirm"}
            | {"journal", "retry", "circuit"}
        ),
    ),
    (
        "+ redact, untrusted (the result cleaned, its values remembered)",
        frozenset({"redact", "untrusted"}),
    ),
    (
        "+ audit, received, decided (everything: the broker as shipped)",
        frozenset({"audit", "received", "decided"}),
    ),
)


def stage_sets() -> list[frozenset[str]]:
    """The stages each layer runs (cumulative)."""
    sets: list[frozenset[str]] = []
    running: frozenset[str] = frozenset()
    for _, added in LAYERS:
        running |= added
        sets.append(running)
    assert sets[-1] == set(pipeline.CALL_STAGES), "the last layer must be the whole order"
    return sets


async def run(rounds: int, total: int) -> list[dict[str, float]]:
    results: list[dict[str, list[float]]] = [{} for _ in LAYERS]
    with ExitStack() as stack:
        url = stack.enter_context(example_upstream())
        brokers = []
        for stages in stage_sets():
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            without = ",".join(name for name in pipeline.CALL_STAGES if name not in stages)
            process = stack.enter_context(
                broker_process(workdir, url, durability="fsync", without=without)
            )
            brokers.append((process, _key(workdir)))
        for _ in range(rounds):
            for index, (process, key) in enumerate(brokers):
                async with AsyncBrokerClient(process.target, key, broker_id="broker.bench") as c:

                    async def call(client: AsyncBrokerClient = c) -> None:
                        # the layer without stages answers with an error
                        with suppress(BrokerError):
                            await client.call("invoices.list", QUERY)

                    single = await measure(call, 1, total // 4)
                    before = cpu_seconds(process.pid)
                    sample = await measure(call, 16, total, warmup=0)
                    used = cpu_seconds(process.pid) - before
                for name, value in (
                    ("c1 p50 ms", single.p50_us / 1000),
                    ("calls/s at 16", sample.per_second),
                    ("broker CPU per call us", used / total * 1e6),
                ):
                    results[index].setdefault(name, []).append(value)
    return [{name: statistics.median(v) for name, v in layer.items()} for layer in results]


def report(results: list[dict[str, float]], rounds: int, total: int) -> str:
    lines = [
        "## Where the time goes: stage by stage",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by "
        "`python -m tests.bench.bench_stages`.",
        f"`invoices.list {QUERY}` (its answer is untrusted: cleaned and scanned) through five "
        "brokers started side by side, each running the stages of its row and those above "
        "(tests/bench/broker_variant.py leaves the others out), durability fsync. Median of "
        f"{rounds} rounds; a round is {total // 4} calls at concurrency 1, then {total} at 16. "
        "CPU is the broker process's user+system time over the run at 16, divided by the calls.",
        "",
        "| stages | c1 p50 | calls/s at 16 | broker CPU a call | added by the row |",
        "|---|---|---|---|---|",
    ]
    previous = 0.0
    for (label, _), row in zip(LAYERS, results, strict=True):
        cpu = row["broker CPU per call us"]
        added = f"+{cpu - previous:,.0f} us" if previous else ""
        lines.append(
            f"| {label} | {row['c1 p50 ms']:.2f} ms | {row['calls/s at 16']:,.0f} | "
            f"{cpu:,.0f} us | {added} |"
        )
        previous = cpu
    return "\n".join(lines) + "\n"


def main() -> None:
    run_call_bench(__doc__, run, report, rounds=3, calls=3000)


if __name__ == "__main__":
    main()
