"""The client configurations of docs/mcp.md, tried: the JSON ones launch exactly the command
they configure (driven by the ``mcp`` SDK's client, as Claude Desktop, Cursor and VS Code
would), the HTTP one sends the header it configures, and the OpenAI Agents SDK's own
``MCPServerStdio`` and ``MCPServerStreamableHttp`` call a tool through the front. Also: who
may use the HTTP front, and from where."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from agents.mcp import MCPServerStdio, MCPServerStreamableHttp
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, Reply, RunningBroker, Workspace
from tests.mcp_helpers import (
    http_client,
    http_front,
    key_file,
    serving_with_token,
    set_secret,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "mcp.md"
INVOICES = {"invoices": [{"id": "INV-1", "supplier": "ACME Paper"}]}
TOKEN = "docs-token-" + "z" * 32
OTHER_TOKEN = "other-token-" + "y" * 32


@pytest.fixture
def agent(ws: Workspace, upstream: FakeUpstream) -> AgentCredentials:
    """The docs' agent, granted the invoices reads."""
    upstream.respond = lambda request: Reply(body=INVOICES)
    return ws.agent("invoice-agent", grants=["invoices.list", "invoices.get"])


@pytest.fixture
def running(ws: Workspace, agent: AgentCredentials) -> Iterator[RunningBroker]:
    with serving_with_token(ws, "invoice-agent", TOKEN) as broker:
        yield broker


def docs_json() -> list[dict[str, Any]]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)]


def localised(text: str, ws: Workspace, agent: AgentCredentials) -> str:
    """A docs path made this test's: the broker command, the config and the key file."""
    broker = str(Path(sys.executable).parent / "broker")
    return (
        text.replace("/opt/toolbroker/.venv/bin/broker", broker)
        .replace("/etc/toolbroker/broker.yaml", str(ws.root / "broker.yaml"))
        .replace("/home/me/.config/toolbroker/invoice-agent.key", str(key_file(ws, agent)))
    )


def stdio_servers() -> list[tuple[str, dict[str, Any]]]:
    """Every stdio server the docs configure, by client."""
    found = []
    for config in docs_json():
        for client, key in (("claude-desktop", "mcpServers"), ("vscode", "servers")):
            for server in config.get(key, {}).values():
                if "command" in server:
                    found.append((client, server))
    return found


@pytest.mark.parametrize(("client_name", "server"), stdio_servers(), ids=lambda v: str(v)[:20])
def test_each_documented_stdio_config_serves_the_agent(
    client_name: str,
    server: dict[str, Any],
    ws: Workspace,
    agent: AgentCredentials,
    running: RunningBroker,
    upstream: FakeUpstream,
) -> None:
    params = StdioServerParameters(
        command=localised(server["command"], ws, agent),
        args=[localised(arg, ws, agent) for arg in server["args"]],
    )

    async def scenario() -> None:
        with anyio.fail_after(90):
            async with Client(params) as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                listed = await client.call_tool("invoices.list", {"supplier": "ACME Paper"})
        assert names == {"invoices.list", "invoices.get"}
        assert listed.structured_content == INVOICES

    anyio.run(scenario)
    assert [r.path for r in upstream.requests] == ["/invoices"]


def test_the_documented_http_config_and_its_header(
    ws: Workspace, agent: AgentCredentials, running: RunningBroker
) -> None:
    (vscode,) = [c for c in docs_json() if "servers" in c]
    server = vscode["servers"]["toolbroker-http"]
    assert server["type"] == "http"
    header = server["headers"]["Authorization"].replace("${input:toolbroker-token}", TOKEN)

    async def scenario(url: str) -> None:
        async with http_client(url, header.removeprefix("Bearer ")) as client:
            listed = await client.call_tool("invoices.list", {})
        assert listed.structured_content == INVOICES

    with http_front(ws, [agent]) as (url, _):
        assert server["url"].endswith("/mcp") and url.endswith("/mcp")
        anyio.run(scenario, url)


def test_the_openai_agents_sdk_over_stdio_and_http(
    ws: Workspace, agent: AgentCredentials, running: RunningBroker, upstream: FakeUpstream
) -> None:
    args = [
        "mcp",
        "--config",
        str(ws.root / "broker.yaml"),
        "--agent",
        "invoice-agent",
        "--key",
        str(key_file(ws, agent)),
    ]
    command = str(Path(sys.executable).parent / "broker")

    async def scenario(url: str) -> None:
        stdio = MCPServerStdio(
            params={"command": command, "args": args}, client_session_timeout_seconds=60
        )
        http = MCPServerStreamableHttp(
            params={"url": url, "headers": {"Authorization": f"Bearer {TOKEN}"}, "timeout": 60},
            client_session_timeout_seconds=60,
        )
        for server in (stdio, http):
            async with server:
                names = {tool.name for tool in await server.list_tools()}
                result = await server.call_tool("invoices.list", {"supplier": "ACME Paper"})
                denied = await server.call_tool("invoices.pay", {"id": "INV-1", "amount": 1})
            assert names == {"invoices.list", "invoices.get"}
            assert result.structured_content == INVOICES
            assert denied.is_error is True
            assert denied.structured_content["reason"] == "TOOL_NOT_GRANTED"  # type: ignore[index]

    with http_front(ws, [agent]) as (url, _):
        anyio.run(scenario, url)
    assert [r.path for r in upstream.requests] == ["/invoices", "/invoices"]


def test_the_http_front_wants_a_known_token_a_served_host_and_a_local_origin(
    ws: Workspace, agent: AgentCredentials, running: RunningBroker, upstream: FakeUpstream
) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Accept": "application/json, text/event-stream"}
    with http_front(ws, [agent]) as (url, _):
        none = httpx.post(url, json=ping, headers=headers)
        wrong = httpx.post(url, json=ping, headers={**headers, "Authorization": "Bearer nope"})
        good = {**headers, "Authorization": f"Bearer {TOKEN}"}
        evil_origin = httpx.post(url, json=ping, headers={**good, "Origin": "http://evil.test"})
        evil_host = httpx.post(url, json=ping, headers={**good, "Host": "evil.test"})
    assert none.status_code == wrong.status_code == 401
    assert none.headers["www-authenticate"].startswith("Bearer")
    assert "mcp-token.<agent>" in none.json()["error_description"]
    assert evil_origin.status_code == 403
    assert evil_host.status_code == 421
    assert upstream.requests == []


def test_each_token_signs_as_its_own_agent_and_never_reaches_the_upstream(
    ws: Workspace, agent: AgentCredentials, running: RunningBroker, upstream: FakeUpstream
) -> None:
    other = ws.agent("metrics-agent", grants=["invoices.get"])
    assert running.reload()
    set_secret(ws, "mcp-token.metrics-agent", OTHER_TOKEN)

    async def names(url: str, token: str) -> set[str]:
        async with http_client(url, token) as client:
            await client.call_tool("invoices.get", {"id": "INV-1"})
            return {tool.name for tool in (await client.list_tools()).tools}

    with http_front(ws, [agent, other]) as (url, _):
        assert anyio.run(names, url, TOKEN) == {"invoices.list", "invoices.get"}
        assert anyio.run(names, url, OTHER_TOKEN) == {"invoices.get"}
    callers = [row.agent for row in ws.audit() if row.tool == "invoices.get"]
    assert set(callers) == {"invoice-agent", "metrics-agent"}
    for request in upstream.requests:
        seen = json.dumps(request.headers) + request.path + request.body.decode(errors="replace")
        assert TOKEN not in seen and OTHER_TOKEN not in seen


def test_the_http_front_refuses_to_start_without_a_token(
    ws: Workspace, running: RunningBroker
) -> None:
    stranger = ws.agent("stranger", grants=["invoices.list"])
    with pytest.raises(AssertionError, match=r"mcp-token\.stranger"), http_front(ws, [stranger]):
        pass
