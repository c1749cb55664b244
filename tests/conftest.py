"""Shared fixtures: a recording fake upstream, a workspace with an invoices tool, a real broker."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis
from playwright.sync_api import Browser, sync_playwright

from broker.client import BrokerClient
from broker.sandbox import sandbox_available
from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, RunningBroker, Workspace
from tests.console_helpers import APPROVERS, OPERATORS, ConsoleWorld, chromium_program
from tests.servers.postgres import PostgresServer, postgres_bin
from tests.servers.redis import RedisServer, redis_program

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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (each test takes a database of its own)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        unavailable("no PostgreSQL here (Debian: apt-get install postgresql; make test does)")
    if os.geteuid() == 0 and not _has_user("postgres"):
        unavailable("no postgres user to run PostgreSQL as (the postgresql package makes it)")
    with PostgresServer(bin_dir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (with its password), dropped after."""
    url = postgres_server.fresh_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real Redis server for the session."""
    program = redis_program()
    if program is None:
        unavailable("no redis-server here (Debian: apt-get install redis-server; make test does)")
    with RedisServer(program) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis, emptied first: no test sees another's limits."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


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


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(request: pytest.FixtureRequest) -> str | None:
    """Where the broker keeps its state: every test on a workspace runs on both backends
    (``None``: SQLite in the data folder; else a PostgreSQL database of its own)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``sqlite_only`` (it looks inside broker.db itself) runs on SQLite only."""
    dropped = [
        item
        for item in items
        if item.get_closest_marker("sqlite_only") and "[postgresql" in item.name
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.fixture
def ws(tmp_path: Path, upstream: FakeUpstream, state_backend: str | None) -> Workspace:
    workspace = Workspace(tmp_path, database_url=state_backend)
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the module's tests."""
    program = chromium_program()
    if program is None:
        unavailable("no chromium here (Debian: apt-get install chromium; make test does)")
    # root in a container has no user namespace for Chromium's own sandbox
    flags = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=program, args=flags)
        yield launched
        launched.close()


@pytest.fixture
def console(ws: Workspace, browser: Browser) -> Iterator[ConsoleWorld]:
    """The console on a broker whose payer agent needs a human for every payment."""
    agent = ws.agent("payer", grants=["invoices.pay", "invoices.list"], approvers=APPROVERS)
    with ws.broker(
        http_listen="127.0.0.1:0",
        approval_timer_interval="100ms",
        console={"operators": OPERATORS},
    ) as running:
        yield ConsoleWorld(ws, running, agent, browser)
