"""make bench: what an agent pays to import the SDK, beside what the whole broker takes: each
module imported in a fresh interpreter, many times, side by side; medians."""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
from pathlib import Path

from tests.bench.harness import machine, publish

HEADING = "## Import time: the agent SDK against the whole broker"
MODULES = ("broker.client", "broker.server")
PROBE = (
    "import sys, time\n"
    "began = time.perf_counter()\n"
    "import {module}\n"
    "took = time.perf_counter() - began\n"
    "print(took, len([m for m in sys.modules if m.startswith('broker')]), len(sys.modules))\n"
)


def once(module: str) -> tuple[float, int, int]:
    """Seconds to import ``module`` in a fresh interpreter, and the modules it loaded."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    took, ours, every = result.stdout.split()
    return float(took), int(ours), int(every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    for module in MODULES:
        once(module)  # compiled bytecode in place before timing
    samples: dict[str, list[tuple[float, int, int]]] = {m: [] for m in MODULES}
    for _ in range(args.runs):
        for module in MODULES:  # side by side, alternating
            samples[module].append(once(module))
    lines = [
        HEADING,
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by "
        f"`python -m tests.bench.bench_imports`: `import <module>` in a fresh interpreter, "
        f"{args.runs} times each, alternating; the median.",
        "",
        "| module | import time | broker modules loaded | modules loaded in all |",
        "|---|---|---|---|",
    ]
    for module in MODULES:
        took = statistics.median(s[0] for s in samples[module])
        _, ours, every = samples[module][-1]
        lines.append(f"| `{module}` | {took * 1000:.0f} ms | {ours} | {every} |")
    client = statistics.median(s[0] for s in samples["broker.client"])
    server = statistics.median(s[0] for s in samples["broker.server"])
    lines += [
        "",
        f"The SDK takes {client / server:.0%} of the broker's import time. It loads signing, "
        "the error tree, exact JSON and the generated protobuf module, and no storage, policy, "
        "untrusted-content or approvals module (`tests/test_structure.py` checks). Before the "
        "split it loaded 29 broker modules, sqlite3, jsonschema and yaml.",
        "",
    ]
    publish("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
