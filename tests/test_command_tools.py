"""Command tools through a real broker: argv only, a sandbox that sees nothing of the host, the
credential in its environment and never in what comes back."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from broker import errors
from broker.cli import main
from broker.client import ToolError
from broker.signing import AgentCredentials
from broker.testing import RunningBroker, Workspace

ROOT = Path(__file__).resolve().parent.parent
MASTER = base64.b64encode(b"m" * 32).decode()
PROBE = """\
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ), "stdin": sys.stdin.read(),
                  "home": sorted(os.listdir("/")), "code": int(os.environ.get("EXIT", "0"))}))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
"""


@pytest.fixture
def tools_ws(world_readable: Path, monkeypatch: pytest.MonkeyPatch, sandbox: None) -> Workspace:
    ws = Workspace(world_readable)
    scripts = world_readable / "tools" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "probe.py").write_text(PROBE)
    shutil.copytree(ROOT / "examples/docs", world_readable / "docs")
    ws.tool(
        "probe",
        kind="command",
        sandbox={"timeout": "3s", "read_only": ["./scripts"], "env": {"MODE": "test"}},
        credentials={"token": {"env": "PROBE_TOKEN"}},
        actions={
            "run": {
                "effect": "read",
                "command": ["/usr/bin/python3", "-I", "./scripts/probe.py", "{first}", "x{second}"],
                "arguments": {
                    "type": "object",
                    "required": ["first", "second"],
                    "properties": {"first": {"type": "string"}, "second": {"type": "string"}},
                },
            },
            "feed": {
                "effect": "read",
                "stdin": "json",
                "command": ["/usr/bin/python3", "-I", "./scripts/probe.py"],
                "arguments": {"type": "object", "properties": {"text": {"type": "string"}}},
            },
            "sleep": {"effect": "read", "command": ["/bin/sleep", "30"]},
        },
    )
    ws.tool(
        "docs",
        kind="command",
        sandbox={"read_only": ["../docs"]},
        actions={
            "to_text": {
                "effect": "read",
                "command": ["pdftotext", "-layout", "{path}", "-"],
                "paths": {"path": "../docs"},
                "arguments": {
                    "type": "object",
                    "required": ["path"],
                    "properties": {"path": {"type": "string"}},
                },
            }
        },
    )
    ws.settings()
    monkeypatch.setenv("BROKER_MASTER_KEY", MASTER)
    monkeypatch.setattr("sys.stdin", io.StringIO("probe-token-value\n"))
    assert main(["secrets", "set", "probe-token", "--config", str(ws.root / "broker.yaml")]) == 0
    return ws


@pytest.fixture
def prober(tools_ws: Workspace) -> AgentCredentials:
    return tools_ws.agent(
        "prober",
        grants=["probe.run", "probe.feed", "probe.sleep", "docs.to_text"],
        credentials={"probe.token": "probe-token"},
    )


def _broker(ws: Workspace, **settings: Any) -> RunningBroker:
    # the broker's own environment holds a secret the sandbox must never see
    return ws.broker(env={"BROKER_MASTER_KEY": MASTER, "HOST_SECRET": "do-not-leak"}, **settings)


def test_arguments_arrive_as_argv_items_and_the_sandbox_sees_only_its_own_environment(
    tools_ws: Workspace, prober: AgentCredentials
) -> None:
    with _broker(tools_ws) as broker, broker.client(prober) as client:
        result = client.call("probe.run", {"first": "a b; rm -rf / $(id)", "second": "`x`"})
    out = result.result
    assert result.state == "DONE"
    assert out["argv"] == ["a b; rm -rf / $(id)", "x`x`"]
    assert out["env"]["MODE"] == "test"
    assert out["env"]["PROBE_TOKEN"] == "[REDACTED:probe-token]"  # injected, then redacted
    assert "HOST_SECRET" not in out["env"]
    assert "BROKER_MASTER_KEY" not in out["env"]
    assert "probe-token-value" not in result.result_json
    assert "root" not in out["home"]
    assert "work" not in out["home"]


def test_arguments_can_go_as_json_on_stdin(tools_ws: Workspace, prober: AgentCredentials) -> None:
    with _broker(tools_ws) as broker, broker.client(prober) as client:
        result = client.call("probe.feed", {"text": 'héllo "quoted"\n'})
    assert json.loads(result.result["stdin"]) == {"text": 'héllo "quoted"\n'}


def test_a_non_zero_exit_is_a_tool_error(tools_ws: Workspace, prober: AgentCredentials) -> None:
    with (
        _broker(tools_ws) as broker,
        broker.client(prober) as client,
        pytest.raises(ToolError) as failed,
    ):
        client.call("probe.run", {"first": "3", "second": ""})
    assert failed.value.result.upstream_status == 3
    assert failed.value.result.result["exit_code"] == 3


def test_a_tool_that_outlives_its_timeout_is_stopped(
    tools_ws: Workspace, prober: AgentCredentials
) -> None:
    with (
        _broker(tools_ws) as broker,
        broker.client(prober) as client,
        pytest.raises(errors.UpstreamTimeout) as stopped,
    ):
        client.call("probe.sleep", {})
    assert stopped.value.status_code.name == "DEADLINE_EXCEEDED"


def test_path_arguments_stay_inside_their_folder(
    tools_ws: Workspace, prober: AgentCredentials
) -> None:
    with _broker(tools_ws) as broker, broker.client(prober) as client:
        text = client.call("docs.to_text", {"path": "invoice-0001.pdf"}).result
        assert "INVOICE INV-0001" in text
        for escape in ("../tools/scripts/probe.py", "/etc/passwd", "a/../../x", ""):
            with pytest.raises(errors.InvalidArguments, match=r"\$\.path"):
                client.call("docs.to_text", {"path": escape})


def test_without_bubblewrap_command_tools_fail_closed(
    tools_ws: Workspace, prober: AgentCredentials
) -> None:
    with (
        _broker(tools_ws, bwrap="/nonexistent/bwrap") as broker,
        broker.client(prober) as client,
        pytest.raises(errors.SandboxUnavailable) as refused,
    ):
        client.call("probe.run", {"first": "a", "second": "b"})
    assert refused.value.status_code.name == "FAILED_PRECONDITION"
    assert "bubblewrap" in refused.value.message


def test_the_example_wordcount_tool(world_readable: Path, sandbox: None) -> None:
    shutil.copytree(ROOT / "tools", world_readable / "tools")
    ws = Workspace(world_readable)
    agent = ws.agent("counter", grants=["wordcount.count"])
    with ws.broker() as broker, broker.client(agent) as client:
        result = client.call("wordcount.count", {"text": "one two  three\nfour"})
    assert result.result == {"words": 4, "lines": 2, "characters": 19}
