"""What a fresh clone runs: the repository's own tools, policies and config load, and the demo
agent sees every outcome it promises against the example upstream."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from broker.settings import load_settings
from broker.snapshot import load_snapshot
from broker.testing import RunningBroker

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def example_upstream() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples/invoices_upstream.py"), "--port", str(port)]
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def test_the_repository_files_load() -> None:
    settings = load_settings(ROOT / "examples/broker.yaml")
    snapshot = load_snapshot(settings.model_copy(update={"dev_keys": False}))
    assert "invoice-agent" in snapshot.policies.policies
    assert snapshot.catalog.get("invoices.pay") is not None


def test_the_demo_agent_sees_each_outcome(tmp_path: Path, example_upstream: str) -> None:
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    shutil.copytree(ROOT / "tools", tmp_path / "tools")
    manifest = yaml.safe_load((tmp_path / "tools/invoices.yaml").read_text())
    manifest["base_url"] = example_upstream
    (tmp_path / "tools/invoices.yaml").write_text(yaml.safe_dump(manifest))
    config = yaml.safe_load((ROOT / "examples/broker.yaml").read_text())
    config.update(
        listen=f"127.0.0.1:{_free_port()}", data_dir="data", policies="policies", tools="tools"
    )
    (tmp_path / "broker.yaml").write_text(yaml.safe_dump(config))

    with RunningBroker(load_settings(tmp_path / "broker.yaml")):
        demo = subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples/demo_agent.py"),
                "--config",
                str(tmp_path / "broker.yaml"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    for reason in ("DONE", "TOOL_NOT_GRANTED", "REPLAYED_NONCE", "INVALID_ARGUMENTS"):
        assert f"-> {reason}" in demo.stdout


def test_the_example_workflow_runs_check_test_and_diff() -> None:
    workflow = yaml.safe_load((ROOT / "examples/github-workflow.yaml").read_text())
    commands = " ".join(step.get("run", "") for step in workflow["jobs"]["policies"]["steps"])
    for command in (
        "broker policy check --format github",
        "broker policy test",
        "broker policy diff",
    ):
        assert command in commands
