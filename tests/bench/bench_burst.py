"""make bench: a burst of 200 concurrent calls to a tool limited to 10 a second. Counts how
many reached the upstream in each second (never above the limit), and what the broker adds to
a call under that burst."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import uvloop
from aiohttp import web

from broker import errors
from broker.client import AsyncBrokerClient
from broker.devmode import dev_key_path
from broker.settings import load_settings
from broker.signing import AgentCredentials
from tests.bench.harness import broker_process, example_upstream, machine, publish

BURST = 200
LIMIT = 10


async def recording_upstream(arrivals: list[float]) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/burst", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def burst(client: AsyncBrokerClient) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    done = refused = 0

    async def one(n: int) -> None:
        nonlocal done, refused
        began = time.perf_counter()
        try:
            await client.call("burst.get", {"n": n}, timeout=60)
            done += 1
        except errors.RateLimited:
            refused += 1
        latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(one(n) for n in range(BURST)))
    return sorted(latencies), done, refused


async def run(queue: str, rounds: int) -> dict[str, object]:
    arrivals: list[float] = []
    runner, url = await recording_upstream(arrivals)
    manifest = {
        "name": "burst",
        "kind": "http",
        "base_url": url,
        "allow_private_network": True,
        "rate_limit": {"requests": LIMIT, "per": "1s", "queue": queue},
        "actions": {
            "get": {
                "effect": "read",
                "method": "GET",
                "path": "/burst",
                "arguments": {"type": "object", "properties": {"n": {"type": "integer"}}},
            }
        },
    }
    results: dict[str, object] = {}
    try:
        with example_upstream() as example, tempfile.TemporaryDirectory() as tmp:
            policy = Path(tmp) / "policies"
            policy.mkdir()
            (policy / "burster.yaml").write_text(
                "agent: burster\ngrants:\n  - tool: burst.get\n"
                "limits: { loop: { repeats: 10000 } }\n"
            )
            with broker_process(Path(tmp), example, tools={"burst": manifest}) as (target, cfg, _):
                settings = load_settings(cfg)
                key = AgentCredentials.load(dev_key_path(settings.data_dir, "burster"))
                async with AsyncBrokerClient(target, key, broker_id=settings.broker_id) as c:
                    await c.call("burst.get", {"n": -1})  # warm the connection
                    await asyncio.sleep(0.2)  # the warm-up took a slot; let it refill
                    samples = []
                    for _ in range(rounds):
                        arrivals.clear()
                        await asyncio.sleep(1.0)  # a quiet second before each burst
                        latencies, done, refused = await burst(c)
                        start = min(arrivals) if arrivals else 0.0
                        per_second = Counter(int(t - start) for t in arrivals)
                        samples.append((latencies, done, refused, per_second))
                    results["samples"] = samples
    finally:
        await runner.cleanup()
    return results


def report(queued: dict[str, object], refused: dict[str, object], rounds: int) -> str:
    lines = [
        "## Rate limits: a burst of 200 calls to a tool limited to 10/s",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}; {rounds} rounds each.",
        "200 concurrent calls from one agent, through one broker process, to a tool with "
        "`rate_limit: {requests: 10, per: 1s}`; a recording upstream counts arrivals per second "
        "(seconds counted from the first arrival).",
        "",
        "| queue | reached upstream | refused (RATE_LIMITED) | most arrivals in one second | "
        "p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for label, result in (("0s (refuse)", refused), ("30s (wait)", queued)):
        samples = result["samples"]
        assert isinstance(samples, list)
        done = statistics.median(s[1] for s in samples)
        no = statistics.median(s[2] for s in samples)
        most = max(max(s[3].values(), default=0) for s in samples)
        p50 = statistics.median(s[0][len(s[0]) // 2] for s in samples) * 1000
        p99 = statistics.median(s[0][int(len(s[0]) * 0.99) - 1] for s in samples) * 1000
        lines.append(f"| {label} | {done:.0f} | {no:.0f} | {most} | {p50:.1f} ms | {p99:.1f} ms |")
    lines += [
        "",
        "With queue 0 the broker answers the whole burst at once: a slot frees every 0.1 s, so "
        "the calls that find one go through and the rest are refused with RetryInfo (0.1 s); "
        "the p99 is what the broker adds to a call under the burst (answering 200 requests at "
        "once on one process). With a queue the calls wait their turn and the upstream sees at "
        "most 10 in any second (slots are spread evenly: a bucket as deep as the limit would "
        "let nearly 20 through in the first second).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    refused = uvloop.run(run("0s", args.rounds))
    queued = uvloop.run(run("30s", 1))
    section = report(queued, refused, args.rounds)
    publish(section, args.write)


if __name__ == "__main__":
    main()
