"""make bench: the same read sent directly, through a broker on SQLite (one process), through
one on PostgreSQL (one process), and through two broker processes on PostgreSQL sharing the
port (``broker run --workers 2``), side by side in one run; medians of several rounds.

Every path is measured with the same load: several gRPC connections (one channel each), so
that the kernel can spread them over workers. PostgreSQL runs with fsync on, as a deployment
would, and the SQLite broker with its default durability (fsync): both put each audit record
on disk before the answer leaves.
"""

from __future__ import annotations

import datetime
import itertools
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp

from broker.client import AsyncBrokerClient
from broker.devmode import dev_key_path
from broker.signing import AgentCredentials
from tests.bench.harness import (
    API_KEY,
    Sample,
    broker_process,
    example_upstream,
    machine,
    measure,
    median_sample,
    run_call_bench,
)
from tests.servers.postgres import PostgresServer, postgres_bin

QUERY = {"supplier": "ACME Paper"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CONNECTIONS = 8  # gRPC channels per path, used in turn
PATHS = (
    "direct",
    "SQLite, 1 process",
    "PostgreSQL, 1 process",
    "PostgreSQL, 2 workers",
    "PostgreSQL, 1 process, no audit",
)
NO_AUDIT = "audit,received,decided"  # the audit's own stages: what the trail costs


@contextmanager
def postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL here (Debian: apt-get install postgresql)")
    with PostgresServer(bin_dir, durable=True) as server:
        yield server


async def run(rounds: int, total: int) -> dict[tuple[str, int], Sample]:
    samples: dict[tuple[str, int], list[Sample]] = {}
    with ExitStack() as stack:
        url = stack.enter_context(example_upstream())
        server = stack.enter_context(postgres())
        targets: dict[str, tuple[str, Path]] = {}
        for name, config in (
            ("SQLite, 1 process", {}),
            ("PostgreSQL, 1 process", {"database_url": server.fresh_database()}),
            ("PostgreSQL, 2 workers", {"database_url": server.fresh_database(), "workers": 2}),
            (
                "PostgreSQL, 1 process, no audit",
                {"database_url": server.fresh_database(), "without": NO_AUDIT},
            ),
        ):
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            running = stack.enter_context(broker_process(workdir, url, **config))
            targets[name] = (running.target, workdir)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

            async def direct() -> None:
                async with http.get(f"{url}/invoices", params=QUERY, headers=AUTH) as response:
                    await response.read()
                    assert response.status == 200

            clients: list[AsyncBrokerClient] = []
            requests: dict[str, Callable[[], Awaitable[None]]] = {"direct": direct}
            for name, (target, workdir) in targets.items():
                key = AgentCredentials.load(dev_key_path(workdir / "data", "invoice-agent"))
                group = [
                    AsyncBrokerClient(target, key, broker_id="broker.bench")
                    for _ in range(CONNECTIONS)
                ]
                clients += group
                requests[name] = through(group)
            try:
                for _ in range(rounds):
                    for concurrency in (1, 16):
                        n = total if concurrency > 1 else total // 4
                        for name, request in requests.items():
                            sample = await measure(request, concurrency, n)
                            samples.setdefault((name, concurrency), []).append(sample)
            finally:
                for client in clients:
                    await client.close()
    return {key: median_sample(values) for key, values in samples.items()}


def through(group: list[AsyncBrokerClient]) -> Callable[[], Awaitable[None]]:
    turns = itertools.cycle(group)

    async def call() -> None:
        result = await next(turns).call("invoices.list", QUERY)
        assert result.upstream_status == 200

    return call


def report(results: dict[tuple[str, int], Sample], rounds: int, total: int) -> str:
    lines = [
        "## Replicas: SQLite, PostgreSQL, and two workers",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}.",
        f"Median of {rounds} rounds; each round runs the four paths back to back "
        f"({total // 4} calls at concurrency 1, {total} at 16), over {CONNECTIONS} gRPC "
        "connections per path. The request is `invoices.list` against "
        "`examples/invoices_upstream.py`. PostgreSQL 15 runs on the same machine with fsync "
        "on; no Redis (no rate limit on this grant). Load generator, brokers, PostgreSQL and "
        "upstream share the machine's cores.",
        "",
        "| concurrency | path | p50 | p99 | calls/s |",
        "|---|---|---|---|---|",
    ]
    for concurrency in (1, 16):
        for name in PATHS:
            s = results[(name, concurrency)]
            lines.append(
                f"| {concurrency} | {name} | {s.p50_us / 1000:.3f} ms | {s.p99_us / 1000:.3f} ms "
                f"| {s.per_second:,.0f} |"
            )
    base1, base16 = results[("SQLite, 1 process", 1)], results[("SQLite, 1 process", 16)]
    lines += ["", "| | PostgreSQL, 1 process | PostgreSQL, 2 workers |", "|---|---|---|"]
    pg = [results[(name, 1)] for name in PATHS[2:4]]
    pg16 = [results[(name, 16)] for name in PATHS[2:4]]
    lines.append(
        "| added p50 over SQLite, concurrency 1 | "
        + " | ".join(f"{(s.p50_us - base1.p50_us) / 1000:+.3f} ms" for s in pg)
        + " |"
    )
    lines.append(
        "| calls/s vs. SQLite, concurrency 16 | "
        + " | ".join(f"{s.per_second / base16.per_second:.2f}x" for s in pg16)
        + " |"
    )
    one, bare = results[("PostgreSQL, 1 process", 1)], results[(PATHS[4], 1)]
    one16, bare16 = results[("PostgreSQL, 1 process", 16)], results[(PATHS[4], 16)]
    two16 = results[("PostgreSQL, 2 workers", 16)]
    lines += [
        "",
        f"The audit on PostgreSQL (its records, written by the audit writer in one transaction "
        f"per batch on the shared chain) adds {(one.p50_us - bare.p50_us) / 1000:+.3f} ms to "
        f"p50 at concurrency 1 and takes calls/s at 16 from {bare16.per_second:,.0f} to "
        f"{one16.per_second:,.0f}. Two workers serve {two16.per_second / one16.per_second:.2f}x "
        "one process at concurrency 16 (target: 1.6x where the machine has cores for them).",
    ]
    if (os.cpu_count() or 1) < 4:
        lines[-1] += (
            f" This machine has {os.cpu_count()} cores, and the load generator, the upstream, "
            "PostgreSQL and the audit writers keep them busy already: a second worker has no "
            "core of its own, so it takes turns with the first rather than adding to it."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    run_call_bench(__doc__, run, report, rounds=5, calls=2000)


if __name__ == "__main__":
    main()
