"""make bench: what time-based checkpoints and witnesses cost. Two brokers side by side, in
alternating order: one as shipped with no witness (a checkpoint every 1,000 records or 60 s),
one signing a checkpoint every second and posting each to an HTTP witness and to syslog (UDP),
both on loopback. Throughput at concurrency 16; the ratio of each round's pair."""

from __future__ import annotations

import datetime
import socket
import statistics
import tempfile
from pathlib import Path

from broker.client import AsyncBrokerClient
from broker.devmode import dev_key_path
from broker.settings import load_settings
from broker.signing import AgentCredentials
from broker.testing import FakeWitness
from tests.bench.harness import (
    Sample,
    broker_process,
    example_upstream,
    machine,
    measure,
    run_call_bench,
)

HEADING = "## Audit checkpoints on time, and witnesses: their cost"
VARIANTS = ("as shipped", "1 s checkpoints, 2 witnesses")


async def run(rounds: int, total: int) -> tuple[dict[str, list[Sample]], int]:
    """Samples per variant, and how many checkpoints the witness took."""
    results: dict[str, list[Sample]] = {variant: [] for variant in VARIANTS}
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # syslog lines land here, unread
    sink.bind(("127.0.0.1", 0))
    witnesses = [
        {"kind": "syslog", "address": f"127.0.0.1:{sink.getsockname()[1]}"},
    ]
    with (
        sink,
        FakeWitness() as witness,
        example_upstream() as url,
        tempfile.TemporaryDirectory() as a,
        tempfile.TemporaryDirectory() as b,
        broker_process(Path(a), url) as (plain_target, config, _),
        broker_process(
            Path(b),
            url,
            audit_checkpoint_interval="1s",
            audit_witnesses=[*witnesses, {"kind": "http", "url": witness.url}],
        ) as (witnessed_target, _, _),
    ):
        settings = load_settings(config)
        first = AgentCredentials.load(dev_key_path(settings.data_dir, "invoice-agent"))
        second = AgentCredentials.load(dev_key_path(Path(b) / "data", "invoice-agent"))
        async with (
            AsyncBrokerClient(plain_target, first, broker_id=settings.broker_id) as plain,
            AsyncBrokerClient(witnessed_target, second, broker_id=settings.broker_id) as seen,
        ):
            counter = iter(range(10**9))

            async def plain_call() -> None:
                await plain.call("invoices.list", {"supplier": f"s{next(counter)}"})

            async def witnessed_call() -> None:
                await seen.call("invoices.list", {"supplier": f"s{next(counter)}"})

            calls = {VARIANTS[0]: plain_call, VARIANTS[1]: witnessed_call}
            for number in range(rounds):
                order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
                for variant in order:  # a pair sees the same drift of the machine's load
                    results[variant].append(await measure(calls[variant], 16, total))
        return results, len(witness.held)


def report(measured: tuple[dict[str, list[Sample]], int], rounds: int, total: int) -> str:
    results, posted = measured
    plain, seen = results[VARIANTS[0]], results[VARIANTS[1]]
    ratios = sorted(s.per_second / p.per_second for p, s in zip(plain, seen, strict=True))
    lines = [
        HEADING,
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by "
        "`python -m tests.bench.bench_witnesses`: `invoices.list` at concurrency 16, "
        f"{total} calls a run, {rounds} rounds; the two brokers side by side, in alternating "
        "order. *1 s checkpoints, 2 witnesses*: `audit_checkpoint_interval: 1s`, each "
        "checkpoint kept in broker.db, logged, and posted to an HTTP witness and to syslog "
        "(UDP), both on loopback.",
        "",
        "| broker | calls/s (median) | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        samples = results[variant]
        med = statistics.median
        lines.append(
            f"| {variant} | {med(s.per_second for s in samples):,.0f} | "
            f"{med(s.p50_us for s in samples) / 1000:.2f} ms | "
            f"{med(s.p99_us for s in samples) / 1000:.2f} ms |"
        )
    lines += [
        "",
        f"Throughput with them / without, each round: {', '.join(f'{r:.2f}' for r in ratios)} "
        f"(median {statistics.median(ratios):.2f}). The HTTP witness took {posted} "
        "checkpoints meanwhile; the writer posts from threads of its own, so a call never "
        "waits for a witness.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_call_bench(__doc__ or "", run, report, rounds=7, calls=3000)
