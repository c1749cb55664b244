"""make bench: what the provenance check adds to a write's decision, with 1 MB of untrusted
text in the task: the same decision with and without the outside text, side by side; medians."""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import string
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from broker.policy.loader import load_policies
from broker.storage.records import TextSegment
from broker.testing import Workspace
from broker.untrusted.outside_text import segment_of_texts
from broker.untrusted.outside_view import OutsideView
from broker.untrusted.text_index import TextIndex
from tests.bench.harness import machine, publish

HEADING = "## Taint by provenance: the cost of checking a write against 1 MB of outside text"
ARGUMENTS: dict[str, Any] = {
    "to": "GB33BUKB20201555555555",
    "amount": "120.00",
    "memo": "Invoice INV-2231 for the consulting work",
}
TRANSFER = {
    "effect": "write",
    "method": "POST",
    "path": "/transfers",
    "arguments": {
        "type": "object",
        "properties": {"to": {"type": "string"}, "amount": {}, "memo": {"type": "string"}},
    },
}


def outside_text(size: int) -> list[TextSegment]:
    """~``size`` characters of mail-like text (words, numbers, addresses) in 100 messages."""
    rng = random.Random(7)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(8000)]
    words += [f"{rng.randint(0, 10**8)}" for _ in range(500)]
    words += [f"{w}@{v}.example" for w, v in zip(words[:300], words[300:600], strict=True)]
    segments = []
    for number in range(100):
        text = " ".join(rng.choice(words) for _ in range(size // 100 // 6))
        segment = segment_of_texts([("$.body", text)], "untrusted", f"mail.get (call {number})")
        segments.append(TextSegment(**{**segment.__dict__, "id": number + 1}))
    return segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        ws = Workspace(Path(root))
        ws.tool("bank", base_url="http://127.0.0.1:9", actions={"transfer": TRANSFER})
        ws.agent("payer", grants=[{"tool": "bank.transfer", "approval": "never"}])
        policies = load_policies(ws.root / "policies", ws.root / "tools")
    action = policies.catalog.get("bank.transfer")
    assert action is not None
    ref = policies.grant_for("payer", action)
    assert ref is not None
    segments = outside_text(1_000_000)
    tracemalloc.start()
    began = time.perf_counter()
    index = TextIndex(segments)
    built = time.perf_counter() - began
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    view = OutsideView(index, TextIndex([]))

    def decide(outside: OutsideView | None) -> float:
        began = time.perf_counter()
        for _ in range(args.decisions):
            policies.approval_for(ref, action, ARGUMENTS, (), outside)
        return (time.perf_counter() - began) / args.decisions

    decide(view)  # warm
    without, with_text = [], []
    for _ in range(args.rounds):
        without.append(decide(None))
        with_text.append(decide(view))
    base, checked = statistics.median(without), statistics.median(with_text)
    lines = [
        HEADING,
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by "
        f"`python -m tests.bench.bench_provenance`: a write with three arguments (an IBAN, an "
        f"amount, a memo of six words) decided {args.decisions} times without and with "
        f"{index.chars:,} characters of compacted outside text in 100 messages, alternating, "
        f"{args.rounds} rounds; medians.",
        "",
        "| decision | per write |",
        "|---|---|",
        f"| without outside text | {base * 1e6:.1f} us |",
        f"| with 1 MB of outside text | {checked * 1e6:.1f} us |",
        f"| **added by the check** | **{(checked - base) * 1e6:.1f} us** (target < 50 us) |",
        "",
        f"Building the index over that text took {built * 1000:.0f} ms (in a thread, once per "
        f"change of the task's text) and {memory / 1e6:.1f} MB of memory. The broker keeps "
        "4,000,000 characters of outside text per agent in the database (the oldest dropped "
        "first, with an `outside_text_dropped` finding) and 16,000,000 indexed in memory.",
        "",
        "What the check catches and what it costs in false alarms is tested, not benchmarked: "
        "`tests/test_provenance.py` pays 20 attacker-chosen recipients of many shapes (made-up "
        "account formats, numbers with and without separators, an IBAN with a bad checksum, "
        "wallets, handles, free-text names, URLs in another case, values inside longer "
        "strings) under `approval: never`: 0 of 20 executed without a human. Ten benign "
        "payments whose values came from the agent's request or a trusted tool, in tasks that "
        "read mail mentioning them: 0 of 10 needed a human.",
        "",
        "On the call path, keeping every answer's text and the agent's own words costs a "
        "small read at concurrency 16 about 100-170 us of broker CPU a call and ~10% of "
        "throughput (4 alternating pairs of 5,000 `invoices.list` calls on 2026-12-04, "
        "against the code before it: 0.72-1.03x, median ~0.88x). The rows are committed "
        "without their own fsync; a write's decision puts them on disk first.",
        "",
    ]
    publish("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
