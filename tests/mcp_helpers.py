"""The MCP front as MCP clients reach it: ``broker mcp`` in a process of its own, driven by the
``mcp`` SDK's own client over stdio or streamable HTTP."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from broker.signing import AgentCredentials
from broker.testing import RunningBroker, Workspace
from tests.broker_process import started_until

MASTER_ENV = {"BROKER_MASTER_KEY": base64.b64encode(b"k" * 32).decode()}


def point_config_at(ws: Workspace, broker: RunningBroker) -> Path:
    """Rewrite broker.yaml with the running broker's address (it listens on port 0), so the
    front and the CLI find it through ``--config`` as a user's would."""
    ws.settings(listen=broker.target)
    return ws.root / "broker.yaml"


def key_file(ws: Workspace, credentials: AgentCredentials) -> Path:
    """The agent's key file, as ``broker keygen`` writes it."""
    path = ws.root / f"{credentials.agent}.key"
    if not path.exists():
        credentials.save(path)
    return path


def front_args(ws: Workspace, credentials: AgentCredentials, *extra: str) -> list[str]:
    """``broker mcp`` arguments for one agent."""
    return [
        "-m",
        "broker",
        "mcp",
        "--config",
        str(ws.root / "broker.yaml"),
        "--agent",
        credentials.agent,
        "--key",
        str(key_file(ws, credentials)),
        *extra,
    ]


def stdio_client(
    ws: Workspace, credentials: AgentCredentials, *extra: str, **client: Any
) -> Client:
    """An MCP client that starts ``broker mcp`` over stdio, as Claude Desktop does."""
    params = StdioServerParameters(
        command=sys.executable,
        args=front_args(ws, credentials, *extra),
        env=dict(os.environ),
        cwd=str(ws.root),
    )
    return Client(params, **client)


@contextmanager
def http_front(
    ws: Workspace, agents: list[AgentCredentials], *extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``broker mcp --http 127.0.0.1:0`` for ``agents``; yields its URL and process."""
    args = ["-m", "broker", "mcp", "--config", str(ws.root / "broker.yaml")]
    for credentials in agents:
        args += ["--agent", credentials.agent, "--key", str(key_file(ws, credentials))]
    log = ws.root / f"mcp-http-{time.monotonic_ns()}.log"

    def ready(text: str) -> str | None:
        found = re.search(r"on (http://127\.0\.0\.1:\d+/mcp)", text)
        return found.group(1) if found else None

    command = [sys.executable, *args, "--http", "127.0.0.1:0", *extra]
    with started_until(command, log, ready, env={**os.environ, **MASTER_ENV}) as running:
        yield running


@contextmanager
def serving_with_token(ws: Workspace, agent: str, token: str) -> Iterator[RunningBroker]:
    """A broker with a master key, its config naming its address, and ``token`` stored as
    the MCP token of ``agent``."""
    with ws.broker(env=MASTER_ENV) as broker:
        point_config_at(ws, broker)
        set_secret(ws, f"mcp-token.{agent}", token)
        yield broker


def http_client(url: str, token: str | None, **client: Any) -> Client:
    """An MCP client over streamable HTTP sending ``token`` as its bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # the timeouts the SDK gives its own client: 30 s, 300 s to read a stream
    session = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    transport = streamable_http_client(url, http_client=session)
    return Client(transport, **client)


def set_secret(ws: Workspace, name: str, value: str) -> None:
    """``broker secrets set NAME`` with the value on stdin, as an operator does."""
    config = str(ws.root / "broker.yaml")
    subprocess.run(
        [sys.executable, "-m", "broker", "secrets", "set", name, "--config", config],
        input=value.encode(),
        env={**os.environ, **MASTER_ENV},
        check=True,
        capture_output=True,
        timeout=60,
    )
