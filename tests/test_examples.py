"""What a fresh clone runs: the repository's own tools, policies and config load, and the demo
agent sees every outcome it promises against the example upstream."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from broker.settings import load_settings
from broker.snapshot import load_snapshot
from broker.testing import RunningBroker
from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _upstream_answers(port: int, api_key: str) -> bool:
    """True once our example upstream answers on ``port``: it knows our key and lists the
    example invoices (another process that took the port meanwhile does not)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invoices", headers={"Authorization": f"Bearer {api_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as answer:  # noqa: S310
            return bool(json.load(answer).get("invoices"))
    except (OSError, ValueError, AttributeError):
        return False


def _start_upstream(api_key: str) -> tuple[subprocess.Popen[bytes], int]:
    """The example upstream and its port. It takes a port number, not port 0: should another
    process bind the one picked here before the upstream does, another is picked."""
    for _ in range(5):
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "examples/invoices_upstream.py"), "--port", str(port)],
            env={**os.environ, "INVOICES_API_KEY": api_key},
        )
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            if _upstream_answers(port, api_key):
                return process, port
            time.sleep(0.1)  # the upstream is starting; bounded by the deadline above
        process.terminate()
        process.wait(10)
    raise RuntimeError("the example upstream did not start")


def test_the_repository_files_load() -> None:
    settings = load_settings(ROOT / "examples/broker.yaml")
    snapshot = load_snapshot(settings.model_copy(update={"dev_keys": False}))
    assert "invoice-agent" in snapshot.policies.policies
    assert snapshot.catalog.get("invoices.pay") is not None


def test_the_demo_agent_sees_each_outcome(world_readable: Path, sandbox: None) -> None:
    if shutil.which("pdftotext") is None:
        unavailable("pdftotext is not installed (Debian: poppler-utils); the demo reads a PDF")
    root = world_readable
    for folder in ("policies", "tools", "examples/docs"):
        shutil.copytree(ROOT / folder, root / folder)
    config = yaml.safe_load((ROOT / "examples/broker.yaml").read_text())
    config.update(
        listen="127.0.0.1:0",  # the broker binds a free port itself; the demo is told below
        http_listen="127.0.0.1:0",  # the example console's port may be taken here
        data_dir="data",
        policies="policies",
        tools="tools",
        master_key_file="data/master.key",
    )
    (root / "broker.yaml").write_text(yaml.safe_dump(config))
    settings = load_settings(root / "broker.yaml")
    api_key = _run_dev().prepare(settings)

    upstream, port = _start_upstream(api_key)
    try:
        manifest = yaml.safe_load((root / "tools/invoices.yaml").read_text())
        manifest["base_url"] = f"http://127.0.0.1:{port}"
        (root / "tools/invoices.yaml").write_text(yaml.safe_dump(manifest))
        with RunningBroker(settings) as broker:
            config["listen"] = broker.target  # where the demo agent finds the broker
            (root / "broker.yaml").write_text(yaml.safe_dump(config))
            demo = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "examples/demo_agent.py"),
                    "--config",
                    str(root / "broker.yaml"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
    finally:
        upstream.terminate()
        upstream.wait(10)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    for reason in (
        "DONE",
        "INVALID_ARGUMENTS",
        "PENDING_APPROVAL",
        "TOOL_NOT_GRANTED",
        "REPLAYED_NONCE",
    ):
        assert f"-> {reason}" in demo.stdout
    assert "INVOICE INV-0001" in demo.stdout
    assert api_key not in demo.stdout + demo.stderr


def _run_dev() -> Any:
    spec = importlib.util.spec_from_file_location("run_dev", ROOT / "examples/run_dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_workflow_runs_check_test_and_diff() -> None:
    workflow = yaml.safe_load((ROOT / "examples/github-workflow.yaml").read_text())
    commands = " ".join(step.get("run", "") for step in workflow["jobs"]["policies"]["steps"])
    for command in (
        "broker policy check --format github",
        "broker policy test",
        "broker policy diff",
    ):
        assert command in commands
