"""Shared fixtures: a recording fake upstream, a workspace with an invoices tool, a real broker."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from broker.client import BrokerClient
from broker.sandbox import sandbox_available
from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, RunningBroker, Workspace

INVOICE_ACTIONS: dict[str, Any] = {
    "list": {
        "effect": "read",
        "method": "GET",
        "path": "/invoices",
        "arguments": {
            "type": "object",
            "properties": {"supplier": {"type": "string"}, "limit": {"type": "integer"}},
        },
    },
    "get": {
        "effect": "read",
        "method": "GET",
        "path": "/invoices/{id}",
        "arguments": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}},
        },
    },
    "pay": {
        "effect": "write",
        "method": "POST",
        "path": "/invoices/{id}/pay",
        "arguments": {
            "type": "object",
            "required": ["id", "amount"],
            "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
        },
    },
}


def unavailable(reason: str) -> NoReturn:
    """A real program or server a test needs is missing here: skip, saying why. In CI (the
    ``CI`` variable is set, as .ci/run sets it) fail instead: .ci/run installs every
    one of them, and the suite must not pass there without them."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (.ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture
def sandbox() -> None:
    """Bubblewrap can build sandboxes here (``make test`` installs it where it may)."""
    problem = sandbox_available()
    if problem is not None:
        unavailable(problem)


@pytest.fixture
def world_readable() -> Iterator[Path]:
    """A folder under /tmp that any uid can read: sandboxed tools run as an unprivileged uid,
    and pytest's own tmp_path (mode 0700) is out of its reach."""
    path = Path(tempfile.mkdtemp(prefix="toolbroker-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def ws(tmp_path: Path, upstream: FakeUpstream) -> Workspace:
    workspace = Workspace(tmp_path)
    workspace.tool(
        "invoices", base_url=upstream.url, allow_private_network=True, actions=INVOICE_ACTIONS
    )
    return workspace


@pytest.fixture
def agent(ws: Workspace) -> AgentCredentials:
    pay = {"tool": "invoices.pay", "approval": "never", "no_approval_because": "a test double"}
    return ws.agent("invoice-agent", grants=["invoices.list", "invoices.get", pay])


@pytest.fixture
def broker(ws: Workspace, agent: AgentCredentials) -> Iterator[RunningBroker]:
    with ws.broker() as running:
        yield running


@pytest.fixture
def client(broker: RunningBroker, agent: AgentCredentials) -> Iterator[BrokerClient]:
    with broker.client(agent) as sdk:
        yield sdk
