"""make bench: what the MCP front adds to a call. The same read, `invoices.list`, through one
broker process along each path side by side: the SDK's signed gRPC call (``AsyncBrokerClient``),
an MCP client (the ``mcp`` SDK's ``Client``) driving ``broker mcp`` over stdio, the same over
streamable HTTP (``broker mcp --http``), and, when FastMCP is installed, the MCP client through a
FastMCP proxy (streamable HTTP) in front of ``broker mcp`` over stdio: another MCP gateway, for
scale. At concurrency 1 and 16; each round runs the paths back to back, in alternating order.
The figures are medians of the rounds; the added milliseconds and the ratios are medians of each
round's pair with the gRPC call. The CPU time each process spends per call says where the added
time goes.

The load generator, the front (or the gateway and the front), the broker and the upstream are
separate processes sharing the machine's cores.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from broker.client import AsyncBrokerClient
from broker.devmode import dev_key_path
from broker.settings import load_settings
from broker.signing import AgentCredentials
from tests.bench.harness import (
    Sample,
    broker_process,
    cpu_seconds,
    example_upstream,
    free_port,
    machine,
    measure,
    median_sample,
    run_call_bench,
)
from tests.broker_process import started_until

HEADING = "## MCP front: what it adds over a gRPC call"
AGENT = "invoice-agent"
TOOL = "invoices.list"
QUERY = {"supplier": "ACME Paper"}
TOKEN = secrets.token_urlsafe(32)  # the HTTP front's bearer token, a broker secret
GRPC, STDIO, HTTP, GATEWAY = "gRPC (SDK)", "MCP stdio", "MCP HTTP", "FastMCP proxy -> MCP stdio"
GATEWAY_REQUIREMENT = "fastmcp>=4.2,<5"
WARMUP = 64  # calls before each measured run: connections open, code paths warm
START_S = 60.0  # a front or a gateway not up by then has failed
BOUND_S = 900.0  # the whole measurement, whatever hangs
NAGLE_MS = 30.0  # HTTP slower than stdio by this much at concurrency 1: delayed ACKs, not work
# The other gateways tried (pip install --dry-run into this venv, 2026-12-05)
NOT_USED = (
    "Also tried: mcp-proxy 0.13.0 requires mcp<2 (it would downgrade mcp 2.3 to 1.30); "
    "LiteLLM's proxy (`litellm[proxy]` 1.108.7) accepts mcp 2.3 but pulls 61 packages (polars, "
    "azure, tokenizers, huggingface_hub, granian...) and downgrades websockets 16 to 15: not "
    "light enough for the dev extras, so not measured."
)


@dataclass
class Cost:
    """CPU seconds spent by each side over a path's runs, and the calls they served."""

    calls: int = 0
    client_s: float = 0.0
    between_s: float = 0.0
    broker_s: float = 0.0

    def ms(self, seconds: float) -> float:
        """``seconds`` per call, in ms."""
        return seconds / self.calls * 1000


@dataclass
class Route:
    """One path: its request, and the processes between the load generator and the broker."""

    request: Callable[[], Awaitable[None]]
    between: Callable[[], list[int]] = list
    cost: Cost = field(default_factory=Cost)


@dataclass
class Results:
    """Per path and concurrency, one sample a round (in round order, so rounds pair up)."""

    samples: dict[tuple[str, int], list[Sample]]
    costs: dict[str, Cost]
    protocol: str
    gateway: str  # the gateway's name and version, or why it was not measured


@dataclass(frozen=True)
class Running:
    """A process of ours: what its start said (its URL), and its id."""

    value: str
    pid: int


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux: /proc/PID/task/TID/children)."""
    found = []
    for listed in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in listed.read_text().split()]
        except OSError:
            continue  # a thread that ended meanwhile
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    return [pid] + [each for child in children(pid) for each in process_tree(child)]


def stdio_fronts() -> list[int]:
    """The ``broker mcp`` processes over stdio that this process started (the MCP client's
    stdio transport does not say its child's pid)."""
    return [pid for pid in children(os.getpid()) if _is_stdio_front(pid)]


def _is_stdio_front(pid: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return args[1:4] == ["-m", "broker", "mcp"] and "--http" not in args


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue  # ended meanwhile
    return total


def front_args(config: Path, key: Path) -> list[str]:
    return ["-m", "broker", "mcp", "--config", str(config), "--agent", AGENT, "--key", str(key)]


def set_token(config: Path) -> None:
    """``broker secrets set mcp-token.<agent>``, value on stdin, as an operator does (the
    master key is the broker's key file, which the config names)."""
    command = ["-m", "broker", "secrets", "set", f"mcp-token.{AGENT}", "--config", str(config)]
    subprocess.run(
        [sys.executable, *command],
        input=TOKEN.encode(),
        check=True,
        capture_output=True,
        timeout=60,
    )


@contextmanager
def started(command: list[str], log: Path, ready: Callable[[str], str | None]) -> Iterator[Running]:
    """A process of ours, once ``ready`` finds what it waits for in its log; stopped after."""
    with started_until(command, log, ready, seconds=START_S) as (found, process):
        yield Running(found, process.pid)


@contextmanager
def http_front(workdir: Path, config: Path, key: Path) -> Iterator[Running]:
    """``broker mcp --http 127.0.0.1:0``; its URL is in its log, with the port it got."""

    def ready(log: str) -> str | None:
        found = re.search(r"on (http://127\.0\.0\.1:\d+/mcp)", log)
        return found.group(1) if found else None

    command = [sys.executable, *front_args(config, key), "--http", "127.0.0.1:0"]
    with started(command, workdir / "mcp-http.log", ready) as front:
        yield front


@contextmanager
def fastmcp_gateway(workdir: Path, config: Path, key: Path) -> Iterator[Running]:
    """``fastmcp run`` serving streamable HTTP as a proxy for ``broker mcp`` over stdio, set
    up as a user would: an MCP config file naming the command."""
    servers = {"broker": {"command": sys.executable, "args": front_args(config, key)}}
    (workdir / "gateway.json").write_text(json.dumps({"mcpServers": servers}))
    port = free_port()
    command = [sys.executable, "-m", "fastmcp.cli", "run", str(workdir / "gateway.json")]
    command += ["--transport", "http", "--host", "127.0.0.1", "--port", str(port), "--no-banner"]

    def ready(_: str) -> str | None:
        return f"http://127.0.0.1:{port}/mcp" if _listening(port) else None

    with started(command, workdir / "gateway.log", ready) as gateway:
        yield gateway


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def http_client(url: str, token: str | None) -> Client:
    """An MCP client over streamable HTTP, with the SDK client's own timeouts."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    session = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    return Client(streamable_http_client(url, http_client=session))


def mcp_call(client: Client, name: str) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        result = await client.call_tool(name, QUERY)
        assert not result.is_error, result.content

    return call


def grpc_call(client: AsyncBrokerClient) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        result = await client.call(TOOL, QUERY)
        assert result.upstream_status == 200

    return call


async def tool_name(client: Client) -> str:
    """The name the client sees for ``invoices.list`` (a gateway may prefix it)."""
    names = [tool.name for tool in (await client.list_tools()).tools]
    return next(name for name in names if name.endswith(TOOL))


def gateway_installed() -> str | None:
    """FastMCP's name and version when it is installed (it is not a dependency)."""
    if importlib.util.find_spec("fastmcp") is None:
        return None
    return f"FastMCP {importlib.metadata.version('fastmcp')}"


async def run(rounds: int, total: int) -> Results:
    async with asyncio.timeout(BOUND_S):
        return await _run(rounds, total)


async def _run(rounds: int, total: int) -> Results:
    gateway = gateway_installed()
    with (
        example_upstream() as url,
        tempfile.TemporaryDirectory() as tmp,
        broker_process(Path(tmp), url) as (target, config, broker_pid),
        (Path(tmp) / "mcp-stdio.log").open("w") as stdio_log,
    ):
        workdir = Path(tmp)
        settings = load_settings(config)
        key = dev_key_path(settings.data_dir, AGENT)
        set_token(config)
        async with AsyncExitStack() as stack:
            http = stack.enter_context(http_front(workdir, config, key))
            grpc = await stack.enter_async_context(
                AsyncBrokerClient(target, AgentCredentials.load(key), broker_id=settings.broker_id)
            )
            params = StdioServerParameters(command=sys.executable, args=front_args(config, key))
            # the front logs on stderr, kept out of the benchmark's output
            stdio = await stack.enter_async_context(Client(stdio_client(params, stdio_log)))
            over_http = await stack.enter_async_context(http_client(http.value, TOKEN))
            routes = {
                GRPC: Route(grpc_call(grpc)),
                STDIO: Route(mcp_call(stdio, TOOL), stdio_fronts),
                HTTP: Route(mcp_call(over_http, TOOL), lambda: process_tree(http.pid)),
            }
            if gateway:
                proxy = stack.enter_context(fastmcp_gateway(workdir, config, key))
                through = await stack.enter_async_context(http_client(proxy.value, None))
                routes[GATEWAY] = Route(
                    mcp_call(through, await tool_name(through)), lambda: process_tree(proxy.pid)
                )
            samples = await _rounds(routes, broker_pid, rounds, total)
            protocol = stdio.protocol_version
    costs = {name: route.cost for name, route in routes.items()}
    missing = f"not installed (`pip install '{GATEWAY_REQUIREMENT}'`)"
    return Results(samples, costs, protocol, gateway or missing)


async def _rounds(
    routes: dict[str, Route], broker_pid: int, rounds: int, total: int
) -> dict[tuple[str, int], list[Sample]]:
    samples: dict[tuple[str, int], list[Sample]] = {}
    order = list(routes)
    for number in range(rounds):
        for concurrency in (1, 16):
            n = total if concurrency > 1 else total // 4
            # alternating order: each path sees the same drift of the machine's load
            for name in order if number % 2 == 0 else order[::-1]:
                sample = await _measured(routes[name], broker_pid, concurrency, n)
                samples.setdefault((name, concurrency), []).append(sample)
    return samples


async def _measured(route: Route, broker_pid: int, concurrency: int, total: int) -> Sample:
    """One run of ``route``, adding the CPU each side spent to its cost."""
    cost = route.cost

    async def counted() -> None:
        cost.calls += 1
        await route.request()

    between = route.between()
    client, middle, broker = time.process_time(), tree_cpu(between), cpu_seconds(broker_pid)
    sample = await measure(counted, concurrency, total, warmup=WARMUP)
    cost.client_s += time.process_time() - client
    cost.between_s += tree_cpu(between) - middle
    cost.broker_s += cpu_seconds(broker_pid) - broker
    return sample


def paired(results: Results, name: str, concurrency: int, base: str) -> tuple[float, ...]:
    """Medians over the rounds of each round's pair: p50 and p99 added over ``base`` (ms),
    and their ratios."""
    pairs = list(
        zip(results.samples[(base, concurrency)], results.samples[(name, concurrency)], strict=True)
    )
    med = statistics.median
    return (
        med((s.p50_us - b.p50_us) / 1000 for b, s in pairs),
        med(s.p50_us / b.p50_us for b, s in pairs),
        med((s.p99_us - b.p99_us) / 1000 for b, s in pairs),
        med(s.p99_us / b.p99_us for b, s in pairs),
    )


def report(results: Results, rounds: int, total: int) -> str:
    names = [name for name in (GRPC, STDIO, HTTP, GATEWAY) if (name, 1) in results.samples]
    lines = [
        HEADING,
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by "
        f"`python -m tests.bench.bench_mcp`: `{TOOL} {json.dumps(QUERY)}` against "
        "`examples/invoices_upstream.py`, one broker process for every path; median of "
        f"{rounds} rounds, each running the paths back to back in alternating order "
        f"({total // 4} calls at concurrency 1, {total} at 16, after {WARMUP} warm-up calls). "
        "*gRPC*: the SDK's `AsyncBrokerClient`. *MCP stdio* / *MCP HTTP*: the `mcp` SDK's "
        "`Client` driving `broker mcp` over stdio / `broker mcp --http` (streamable HTTP, "
        f"bearer token), protocol {results.protocol}. *FastMCP proxy -> MCP stdio*: the same "
        "client through `fastmcp run` serving streamable HTTP as a proxy for `broker mcp` over "
        f"stdio ({results.gateway}).",
        "",
        "| concurrency | path | p50 | p99 | calls/s |",
        "|---|---|---|---|---|",
    ]
    for concurrency in (1, 16):
        for name in names:
            s = median_sample(results.samples[(name, concurrency)])
            lines.append(
                f"| {concurrency} | {name} | {s.p50_us / 1000:.3f} ms | "
                f"{s.p99_us / 1000:.3f} ms | {s.per_second:,.0f} |"
            )
    lines += [
        "",
        "Over the gRPC call (medians of each round's pair):",
        "",
        "| concurrency | path | added p50 | p50 ratio | added p99 | p99 ratio |",
        "|---|---|---|---|---|---|",
    ]
    for concurrency in (1, 16):
        for name in names[1:]:
            p50, r50, p99, r99 = paired(results, name, concurrency, GRPC)
            lines.append(
                f"| {concurrency} | {name} | {p50:+.3f} ms | {r50:.2f}x | {p99:+.3f} ms | "
                f"{r99:.2f}x |"
            )
    lines += _costs(results, names) + _verdict(results) + _gateway(results, names)
    return "\n".join(lines) + "\n"


def _costs(results: Results, names: list[str]) -> list[str]:
    lines = [
        "",
        "CPU time per call over all of a path's runs, warm-up included: the load generator "
        "(the SDK's or the MCP client's work), the processes between it and the broker (the "
        "front; the gateway and the front under it), and the broker:",
        "",
        "| path | load generator | front / gateway | broker | total |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        c = results.costs[name]
        parts = [c.client_s, c.between_s, c.broker_s]
        cells = " | ".join(f"{c.ms(part):.2f} ms" for part in [*parts, sum(parts)])
        lines.append(f"| {name} | {cells} |")
    return lines


def _verdict(results: Results) -> list[str]:
    added = {name: paired(results, name, 1, GRPC)[0] for name in (STDIO, HTTP)}
    met = [name for name, ms in added.items() if ms < 1.0]
    verdict = ("met by " + " and ".join(met)) if met else "not met"
    front_ms = {name: results.costs[name].ms(results.costs[name].between_s) for name in added}
    lines = [
        "",
        "Target: the front adds under 1 ms p50 over the gRPC call at concurrency 1. Added: "
        f"stdio {added[STDIO]:+.2f} ms, HTTP {added[HTTP]:+.2f} ms: {verdict}. A call through "
        "the front crosses one more process: the MCP client frames a JSON-RPC request and "
        "validates the answer with the SDK's pydantic models; the front parses and validates "
        "the request, signs and makes the gRPC call the SDK would have made, parses the "
        "tool's JSON and writes it back twice (`structuredContent` and text, with the "
        "provenance marker of outside content) in a JSON-RPC response. The front alone spends "
        f"{front_ms[STDIO]:.2f} ms (stdio) and {front_ms[HTTP]:.2f} ms (HTTP: uvicorn and the "
        "bearer-token check too) of CPU per call, on the serial path of every call, and each "
        "hop adds a wake-up of another process, on 2 cores shared by the load generator, the "
        "front, the broker and the upstream. At concurrency 16 the cores are saturated: the "
        "added CPU shows as fewer calls a second and longer queues. Most of the front's "
        "share is the SDK's, not the broker's code: a profile of the stdio front (cProfile, "
        "1,500 calls) puts the front's own handler, the gRPC call included, at about a "
        "quarter of it; the rest is the SDK's dispatch and validation. The SDK's stdio "
        "transport handed every line read and written to a worker thread; the front now "
        "reads and writes its pipes on the event loop, which took its CPU from 1.18 to "
        "0.93 ms a call (this benchmark before and after, 2026-12-05) but is lost in the "
        "noise of p50 at concurrency 1. What is left is the SDK's per-message work, which a "
        "front on the official SDK keeps.",
    ]
    stall = paired(results, HTTP, 1, STDIO)[0]
    if stall > NAGLE_MS:  # more than any CPU difference explains: the socket waits
        lines += [
            "",
            f"Over HTTP each call at concurrency 1 waits {stall:.0f} ms longer than over "
            "stdio, far more than the extra CPU: the signature of TCP delayed ACKs against "
            "Nagle's algorithm. The front listens on a socket it makes itself "
            "(`http_front.bind`, without `IPPROTO_TCP`), so asyncio does not set "
            "`TCP_NODELAY` on the connections it accepts, and a response written in more than "
            "one piece waits for the client's delayed ACK (about 40 ms on Linux).",
        ]
    return lines


def _gateway(results: Results, names: list[str]) -> list[str]:
    if GATEWAY not in names:
        return ["", f"No gateway measured: FastMCP is {results.gateway}. {NOT_USED}"]
    p50, ratio, p99, _ = paired(results, GATEWAY, 1, STDIO)
    stdio_front = results.costs[STDIO].ms(results.costs[STDIO].between_s)
    proxy_ms = results.costs[GATEWAY].ms(results.costs[GATEWAY].between_s) - stdio_front
    own = paired(results, STDIO, 1, GRPC)[0]
    return [
        "",
        f"The gateway, for scale: {results.gateway} as a proxy in front of the stdio front "
        f"adds {p50:+.2f} ms p50 and {p99:+.2f} ms p99 at concurrency 1 over the stdio front "
        f"alone ({ratio:.2f}x), and spends about {proxy_ms:.2f} ms of CPU per call itself; "
        f"the broker's stdio front adds {own:+.2f} ms p50 over gRPC and spends "
        f"{stdio_front:.2f} ms. Installed into the venv with `{GATEWAY_REQUIREMENT}`, which "
        f"changes no package already there. {NOT_USED}",
    ]


def main() -> None:
    run_call_bench(__doc__ or "", run, report, rounds=5, calls=800)


if __name__ == "__main__":
    main()
