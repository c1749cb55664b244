"""Bad config, policy and tool files stop the broker with the file, the line and what to write."""

from __future__ import annotations

import pytest

from broker.errors import ConfigError
from broker.testing import FakeUpstream, RunningBroker, Workspace

GOOD_POLICY = """\
agent: invoice-agent
keys: []
grants:
  - tool: invoices.list
"""


def _start_fails(ws: Workspace) -> ConfigError:
    with pytest.raises(ConfigError) as failed:
        ws.broker().start()
    return failed.value


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "agent: invoice-agent\ngrants:\n  - tool: invoices.list\n  - tol: invoices.get\n",
            4,
            "grants[1].tol: unknown key; did you mean 'tool'?",
        ),
        (
            "agent: invoice-agent\ngrants:\n  - tool: [invoices.list]\n",
            3,
            "grants[0].tool: Input should be a valid string",
        ),
        ("agent: invoice-agent\ngrants:\n  - tool: invoices\n", 3, "is not tool.action"),
        (
            "agent: invoice-agent\ngrants:\n  - tool: invoices.refund\n",
            3,
            "invoices has no action 'refund' (it has: get, list, pay)",
        ),
        (
            "agent: invoice-agent\ngrants:\n  - tool: payroll.run\n",
            3,
            "no tool manifest defines 'payroll'",
        ),
        ("agent: invoice-agent\ngrants: [\n  - tool: x\n", 3, "not valid YAML"),
        ("agent: invoice-agent\nagent: other\n", 2, "duplicate key 'agent'"),
        (
            "agent: invoice-agent\nkeys:\n  - { id: k1, ed25519: c2hvcnQ= }\n",
            3,
            "ed25519 must be base64 of 32 bytes",
        ),
        ("agent: someone-else\n", 1, "must equal the file name"),
        ("- just\n- a list\n", 1, "must be a mapping"),
    ],
)
def test_a_bad_policy_names_file_line_and_fix(
    ws: Workspace, upstream: FakeUpstream, text: str, line: int, message: str
) -> None:
    path = ws.write("policies/invoice-agent.yaml", text)
    error = _start_fails(ws)
    assert error.path == str(path)
    assert error.line == line
    assert message in error.message


def test_two_agents_cannot_share_a_key_id(ws: Workspace) -> None:
    first = ws.agent("first")
    ws.write(
        "policies/second.yaml",
        f"agent: second\nkeys:\n  - {{ id: {first.key_id}, ed25519: {first.public_key_b64} }}\n",
    )
    error = _start_fails(ws)
    assert error.path.endswith("second.yaml") and error.line == 3
    assert "also used by first" in error.message


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            {
                "base_url": "ftp://x",
                "actions": {"a": {"effect": "read", "method": "GET", "path": "/"}},
            },
            "base_url must be http",
        ),
        (
            {
                "base_url": "http://x",
                "actions": {"a": {"effect": "read", "method": "GET", "path": "/{id}"}},
            },
            "placeholder {id} must be listed in arguments.required",
        ),
        (
            {
                "base_url": "http://x",
                "actions": {"a": {"effect": "maybe", "method": "GET", "path": "/"}},
            },
            "actions.a.effect",
        ),
        (
            {
                "base_url": "http://x",
                "actions": {
                    "a": {"effect": "read", "method": "GET", "path": "/", "arguments": {"type": 5}}
                },
            },
            "not a valid JSON Schema",
        ),
        ({"base_url": "http://x", "timeout": 10, "actions": {}}, "write a unit after 10"),
    ],
)
def test_a_bad_tool_manifest_is_refused(
    ws: Workspace, manifest: dict[str, object], message: str
) -> None:
    ws.tool("broken", **manifest)
    error = _start_fails(ws)
    assert error.path.endswith("broken.yaml")
    assert error.line is not None
    assert message in error.message


def test_a_config_typo_is_an_error_not_a_default(ws: Workspace) -> None:
    with pytest.raises(ConfigError) as failed:
        ws.settings(request_windw="10s")
    assert "request_windw: unknown key; did you mean 'request_window'?" in str(failed.value)
    with pytest.raises(ConfigError, match="at most 300s"):
        ws.settings(request_window="10m")


def test_two_brokers_cannot_share_a_data_dir_or_a_port(ws: Workspace) -> None:
    ws.write("policies/invoice-agent.yaml", GOOD_POLICY)
    with ws.broker() as first:
        with pytest.raises(ConfigError, match="another broker is running on this data_dir"):
            ws.broker().start()
        other_dir = ws.settings(listen=first.target, data_dir="other")
        with pytest.raises(ConfigError, match="is the port in use"):
            RunningBroker(other_dir).start()
