"""`make run`: start the example invoices upstream and a broker, say how to call them, and stop
both cleanly on Ctrl-C.

The config (examples/broker.yaml) turns on dev_keys, so the broker makes a key per agent in its
data directory on first start; nothing needs to be set up by hand.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.commands.console_command import sign_in_link
from broker.commands.storage_access import with_state
from broker.devmode import dev_key_path, ensure_key_file, ensure_secret
from broker.errors import ConfigError
from broker.settings import BrokerSettings, load_settings
from broker.storage.records import StoreError

HERE = Path(__file__).resolve().parent


def wait_healthy(target: str, process: subprocess.Popen[bytes], seconds: float = 20.0) -> bool:
    """True once the broker's gRPC health check answers SERVING."""
    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                time.sleep(0.2)
    return False


def prepare(settings: BrokerSettings) -> str:
    """A master key file and the example's API key in the secret store, made if missing; the
    key's value goes to the example upstream only (agents never see it)."""
    assert settings.master_key_file is not None
    master_key = ensure_key_file(settings.master_key_file)
    return with_state(settings, lambda state: ensure_secret(state, master_key, "invoices-dev-key"))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "broker.yaml")
    parser.add_argument("--upstream-port", type=int, default=8081)
    args = parser.parse_args()
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        api_key = prepare(settings)
    except StoreError as exc:
        print(
            f"{exc}\nThe development data in {settings.data_dir} cannot be used (made by an "
            "older development version?). Move that folder away and run make run again.",
            file=sys.stderr,
        )
        return 1

    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "invoices_upstream.py"), "--port", str(args.upstream_port)],
        env={**os.environ, "INVOICES_API_KEY": api_key},
    )
    broker = subprocess.Popen([sys.executable, "-m", "broker", "run", "--config", str(args.config)])
    children = (broker, upstream)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not wait_healthy(settings.listen, broker):
            print("the broker did not start; its log is above", file=sys.stderr)
            return 1
        key = dev_key_path(settings.data_dir, "invoice-agent")
        console = (
            f"The web console (sign in once with this link):\n  {sign_in_link(settings, 'dev')}\n"
            if settings.console is not None
            else ""
        )
        print(
            f"\nThe broker is up. {console}In another terminal:\n"
            f"  .venv/bin/broker call --config {args.config} --agent invoice-agent "
            f'--key {key} invoices.list \'{{"supplier": "ACME Paper"}}\'\n'
            "  make demo\n"
            "Ctrl-C stops the broker and the upstream.\n",
            file=sys.stderr,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
