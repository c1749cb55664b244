"""make bench: the authorise decision (grant lookup, argument constraints, approval) at 10,
1,000 and 10,000 agents and grants; it must stay flat (indexed, not a scan)."""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import time
from decimal import Decimal
from pathlib import Path

from broker.manifest import HttpTool, ToolCatalog
from broker.policy.evaluate import PolicySet
from broker.policy.model import Policy
from tests.bench.harness import machine, publish

ACTIONS = ("list", "get", "create", "update", "pay")
SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}, "amount": {"type": "string"}}}


def build(agents: int, grants_per_agent: int) -> PolicySet:
    tools = max(10, agents * grants_per_agent // 50)
    catalog = ToolCatalog(
        [
            HttpTool.model_validate(
                {
                    "name": f"tool{t}",
                    "kind": "http",
                    "base_url": "https://x.example",
                    "actions": {
                        a: {
                            "effect": "write" if a in ("pay", "update") else "read",
                            "method": "POST",
                            "path": "/x",
                            "arguments": SCHEMA,
                        }
                        for a in ACTIONS
                    },
                }
            )
            for t in range(tools)
        ]
    )
    policies = []
    for n in range(agents):
        grants = []
        for g in range(grants_per_agent):
            tool = f"tool{(n * grants_per_agent + g) % tools}"
            grants.append(
                {
                    "tool": f"{tool}.pay",
                    "where": {
                        "amount": {"min": "0.01", "max": "5000.00"},
                        "id": {"pattern": "INV-*"},
                    },
                    # half the agents' conditions hold for the measured call, at every size
                    "approval": {"when": {"amount": {"above": "1000.00" if n % 2 else "2000.00"}}},
                }
                if g == 0
                else {"tool": f"{tool}.{ACTIONS[g % 2]}"}
            )
        policies.append(Policy.model_validate({"agent": f"agent{n}", "grants": grants}))
    return PolicySet(policies, catalog, "bench")


def measure(policies: PolicySet, agents: int, grants_per_agent: int, n: int = 100_000) -> list[int]:
    tools = max(10, agents * grants_per_agent // 50)
    arguments = {"id": "INV-0042", "amount": Decimal("1234.56")}
    rng = random.Random(11)
    picks = []
    for _ in range(n):
        agent = rng.randrange(agents)
        tool = f"tool{(agent * grants_per_agent) % tools}"
        picks.append((f"agent{agent}", policies.catalog.get(f"{tool}.pay")))
    timings = []
    for agent, action in picks:
        assert action is not None
        start = time.perf_counter_ns()
        ref = policies.grant_for(agent, action)
        assert ref is not None
        policies.constraint_violation(ref, arguments)
        policies.approval_for(ref, action, arguments)
        timings.append(time.perf_counter_ns() - start)
    return sorted(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    rows = []
    for agents, per_agent in ((10, 1), (1_000, 1), (10_000, 1), (10, 1_000), (10_000, 10)):
        policies = build(agents, per_agent)
        p50s, p99s = [], []
        for _ in range(args.rounds):
            timings = measure(policies, agents, per_agent)
            p50s.append(timings[len(timings) // 2] / 1000)
            p99s.append(timings[int(len(timings) * 0.99)] / 1000)
        rows.append((agents, agents * per_agent, statistics.median(p50s), statistics.median(p99s)))
    base = rows[0][3]
    lines = [
        "## Authorise: policy decision at scale",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}. One decision = grant "
        "lookup + argument constraints (decimal min/max, glob) + approval condition, for a "
        f"random agent; 100,000 decisions a round, median of {args.rounds} rounds, in process.",
        "",
        "| agents | grants | p50 | p99 | p99 vs. 10 agents |",
        "|---|---|---|---|---|",
    ]
    for agents, grants, p50, p99 in rows:
        lines.append(
            f"| {agents:,} | {grants:,} | {p50:.2f} us | {p99:.2f} us | "
            f"{(p99 / base - 1) * 100:+.0f}% |"
        )
    lines += [
        "",
        "Target: p99 <= 20 us and flat within +-10% from 10 to 10,000. The lookups are dict "
        "lookups (no scan): 10 agents holding 10,000 grants decide as fast as 10 holding 10. "
        "What grows with the number of agents is the working set a random agent touches "
        "(its grant, its compiled rules), which falls out of the CPU caches: a few "
        "microseconds, so the +-10% flatness is not met on this machine, the 20 us ceiling is.",
    ]
    section = "\n".join(lines) + "\n"
    publish(section, args.write)


if __name__ == "__main__":
    main()
