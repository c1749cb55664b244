"""make bench: the same request sent directly to the example upstream and through the broker,
side by side in one run, at concurrency 1 and 16; medians of several rounds.

The load generator, the broker and the upstream are three processes on the same machine, so the
broker's figures include sharing the cores with both.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from broker.client import AsyncBrokerClient
from broker.devmode import dev_key_path
from broker.settings import load_settings
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

QUERY = {"supplier": "ACME Paper"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}  # what the broker injects, sent directly


PATHS = ("direct", "broker, durability fsync", "broker, durability process")


async def run(rounds: int, total: int) -> dict[tuple[str, int], Sample]:
    samples: dict[tuple[str, int], list[Sample]] = {}
    with (
        example_upstream() as url,
        tempfile.TemporaryDirectory() as tmp_fsync,
        tempfile.TemporaryDirectory() as tmp_process,
        broker_process(Path(tmp_fsync), url, durability="fsync") as (fsync_target, config, _),
        broker_process(Path(tmp_process), url, durability="process") as (process_target, _, _),
    ):
        settings = load_settings(config)
        credentials = AgentCredentials.load(dev_key_path(settings.data_dir, "invoice-agent"))
        # the second broker made its own dev key: trust the first one's there too
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http,
            AsyncBrokerClient(fsync_target, credentials, broker_id=settings.broker_id) as fsync,
            AsyncBrokerClient(
                process_target, _key(Path(tmp_process)), broker_id=settings.broker_id
            ) as process,
        ):

            async def direct() -> None:
                async with http.get(f"{url}/invoices", params=QUERY, headers=AUTH) as response:
                    await response.read()
                    assert response.status == 200

            def through(client: AsyncBrokerClient) -> Callable[[], Awaitable[None]]:
                async def call() -> None:
                    result = await client.call("invoices.list", QUERY)
                    assert result.upstream_status == 200

                return call

            requests = dict(zip(PATHS, (direct, through(fsync), through(process)), strict=True))
            for _ in range(rounds):
                for concurrency in (1, 16):
                    n = total if concurrency > 1 else total // 4
                    for name, request in requests.items():
                        sample = await measure(request, concurrency, n)
                        samples.setdefault((name, concurrency), []).append(sample)
    return {key: median_sample(values) for key, values in samples.items()}


def _key(workdir: Path) -> AgentCredentials:
    return AgentCredentials.load(dev_key_path(workdir / "data", "invoice-agent"))


def report(results: dict[tuple[str, int], Sample], rounds: int, total: int) -> str:
    lines = [
        "## Call path: through the broker vs. direct",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}.",
        f"Median of {rounds} rounds; each round runs the three paths back to back "
        f"({total // 4} calls at concurrency 1, {total} at 16). The request is "
        '`invoices.list {"supplier": "ACME Paper"}` against `examples/invoices_upstream.py`; '
        "direct uses the broker's own HTTP client (aiohttp). Load generator, brokers and "
        "upstream are separate processes sharing the machine's cores. `fsync` (the default) "
        "puts each audit row on disk before the answer leaves; `process` keeps it through a "
        "broker crash but not a power loss.",
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
    d1, d16 = results[("direct", 1)], results[("direct", 16)]
    lines += ["", "| | fsync | process | target |", "|---|---|---|---|"]
    b1 = [results[(name, 1)] for name in PATHS[1:]]
    b16 = [results[(name, 16)] for name in PATHS[1:]]
    lines.append(
        "| added p50, concurrency 1 | "
        + " | ".join(f"{(b.p50_us - d1.p50_us) / 1000:.3f} ms" for b in b1)
        + " | <= 1 ms |"
    )
    lines.append(
        "| calls/s, concurrency 16 | "
        + " | ".join(f"{b.per_second:,.0f}" for b in b16)
        + " | >= 1,500 |"
    )
    lines.append(
        "| p99 broker/direct, concurrency 16 | "
        + " | ".join(f"{b.p99_us / d16.p99_us:.1f}x" for b in b16)
        + " | <= 3x |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    run_call_bench(__doc__, run, report, rounds=5, calls=4000)


if __name__ == "__main__":
    main()
