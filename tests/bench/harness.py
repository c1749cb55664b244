"""Shared pieces of the benchmarks: start the example upstream and a broker as real processes,
and measure a coroutine factory at a given concurrency."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import grpc
import uvloop
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.devmode import ensure_key_file, ensure_secret
from broker.storage.interfaces import StateStore
from broker.storage.pg_state import PgState
from broker.storage.sqlite_state import SqliteState

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)  # not listening yet; bounded by the deadline
    raise RuntimeError(f"nothing listens on {port}")


def wait_healthy(target: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.RpcError:
                time.sleep(0.1)  # still starting; bounded by the deadline
    raise RuntimeError(f"broker at {target} did not become healthy")


API_KEY = secrets.token_urlsafe(24)  # the example upstream's key, stored in each broker


@contextmanager
def example_upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples/invoices_upstream.py"), "--port", str(port)],
        env={**os.environ, "INVOICES_API_KEY": API_KEY},
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


class BrokerProcess(NamedTuple):
    """A running `broker run`: where it listens, its config file and its process id."""

    target: str
    config: Path
    pid: int


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def broker_process(
    workdir: Path,
    upstream_url: str,
    tools: dict[str, Any] | None = None,
    grants: list[Any] | None = None,
    without: str = "",
    inline: bool = False,
    workers: int = 1,
    **config: Any,
) -> Iterator[BrokerProcess]:
    """A `broker run` process on a copy of the repository's tools and policies."""
    shutil.copytree(ROOT / "policies", workdir / "policies", dirs_exist_ok=True)
    shutil.copytree(ROOT / "tools", workdir / "tools", dirs_exist_ok=True)
    manifest = yaml.safe_load((workdir / "tools/invoices.yaml").read_text())
    manifest["base_url"] = upstream_url
    (workdir / "tools/invoices.yaml").write_text(yaml.safe_dump(manifest))
    # a benchmark repeats one request on purpose, ~2,000 a second: not a loop
    policy = yaml.safe_load((workdir / "policies/invoice-agent.yaml").read_text())
    policy["limits"] = {"loop": {"repeats": 10_000, "within": "1s"}}
    policy["grants"] += grants or []
    (workdir / "policies/invoice-agent.yaml").write_text(yaml.safe_dump(policy))
    master = ensure_key_file(workdir / "data" / "master.key")
    # on a loop of its own, in a thread: the benchmarks call this from inside theirs
    with ThreadPoolExecutor(1) as thread:
        store = _store_api_key(workdir / "data" / "broker.db", master, config.get("database_url"))
        thread.submit(asyncio.run, store).result()
    for name, extra in (tools or {}).items():
        (workdir / f"tools/{name}.yaml").write_text(yaml.safe_dump(extra))
    port = free_port()
    settings = {
        "broker_id": "broker.bench",
        "listen": f"127.0.0.1:{port}",
        "data_dir": "data",
        "policies": "policies",
        "tools": "tools",
        "dev_keys": True,
        "master_key_file": "data/master.key",
        **config,
    }
    config_path = workdir / "broker.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    log = (workdir / "broker.log").open("wb")
    command = [sys.executable, "-m", "broker", "run", "--config", str(config_path)]
    if workers > 1:
        command += ["--workers", str(workers)]
    if without or inline:  # a variant, to measure what stages cost or what workers save
        command = [
            sys.executable,
            "-m",
            "tests.bench.broker_variant",
            "--config",
            str(config_path),
            "--without",
            without,
            *(["--inline"] if inline else []),
        ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        try:
            wait_healthy(f"127.0.0.1:{port}")
            _wait_serving(workdir / "broker.log", port, workers)
        except RuntimeError:
            tail = (workdir / "broker.log").read_text()[-2000:]
            raise RuntimeError(f"the broker did not start:\n{tail}") from None
        yield BrokerProcess(f"127.0.0.1:{port}", config_path, process.pid)
    finally:
        process.terminate()
        process.wait(15)
        log.close()


@dataclass(frozen=True)
class Sample:
    """One measured run."""

    p50_us: float
    p99_us: float
    per_second: float


async def measure(
    request: Callable[[], Awaitable[Any]], concurrency: int, total: int, warmup: int = 200
) -> Sample:
    """Run ``total`` requests with ``concurrency`` workers; latencies of each request."""
    for _ in range(warmup // concurrency or 1):
        await asyncio.gather(*(request() for _ in range(concurrency)))
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await request()
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Sample(
        p50_us=latencies[len(latencies) // 2] * 1e6,
        p99_us=latencies[int(len(latencies) * 0.99) - 1] * 1e6,
        per_second=len(latencies) / elapsed,
    )


def median_sample(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.p50_us for s in samples),
        statistics.median(s.p99_us for s in samples),
        statistics.median(s.per_second for s in samples),
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    python = platform.python_version()
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}, Python {python}"


def publish(section: str, benchmarks: Path | None) -> None:
    """Print a measured section and, given BENCHMARKS.md, replace the section with the same
    heading there, keeping the others."""
    print(section)
    if benchmarks is None:
        return
    heading = section.splitlines()[0]
    text = "# Benchmarks\n\nWritten by `make bench`.\n"
    if benchmarks.exists():
        text = benchmarks.read_text()
    parts = text.split("\n## ")
    kept = [parts[0]] + [p for p in parts[1:] if "## " + p.splitlines()[0] != heading]
    benchmarks.write_text("\n## ".join(kept).rstrip("\n") + "\n\n" + section)


R = TypeVar("R")


def run_call_bench(
    doc: str,
    run: Callable[[int, int], Coroutine[Any, Any, R]],
    report: Callable[[R, int, int], str],
    *,
    rounds: int,
    calls: int,
) -> None:
    """The command line of a call benchmark: ``--rounds``, ``--calls`` (at concurrency 16) and
    ``--write BENCHMARKS.md``; runs ``run(rounds, calls)`` on uvloop and publishes its report."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--calls", type=int, default=calls, help="calls per run at concurrency 16")
    parser.add_argument("--write", type=Path, help="update this BENCHMARKS.md")
    args = parser.parse_args()
    results = uvloop.run(run(args.rounds, args.calls))
    publish(report(results, args.rounds, args.calls), args.write)


def _wait_serving(log: Path, port: int, workers: int, seconds: float = 30.0) -> None:
    """Until every worker says it serves (one answering the health check is not all)."""
    deadline = time.monotonic() + seconds
    while log.read_text(errors="replace").count(f"serving on port {port}") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not all start")
        time.sleep(0.1)  # workers starting; bounded by the deadline


async def _store_api_key(database: Path, master: bytes, url: str | None = None) -> None:
    """The example upstream's API key in the broker's secret store, as `make run` puts it."""
    state: StateStore = SqliteState(database) if url is None else PgState(url)
    await state.open()
    try:
        await ensure_secret(state, master, "invoices-dev-key", API_KEY)
    finally:
        await state.close()
