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
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, *args, "--http", "127.0.0.1:0", *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **MASTER_ENV},
        )
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            found = re.search(r"on (http://127\.0\.0\.1:\d+/mcp)", log.read_text(errors="replace"))
            if found:
                url = found.group(1)
                break
            assert process.poll() is None, "broker mcp exited:\n" + log.read_text()
            time.sleep(0.05)  # the front is starting; bounded by the deadline
        assert url is not None, "broker mcp --http did not start:\n" + log.read_text()
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


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
