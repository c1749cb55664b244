"""``broker migrate``: the PostgreSQL schema ahead of a rollout, and a SQLite broker moved into
PostgreSQL with nothing lost: its trail verifies there, a pending approval can still be
decided, a retried write is still answered from the store, a freeze still holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import errors
from broker.cli import main
from broker.client import ApprovalPending
from broker.testing import FakeUpstream, Reply, Workspace
from tests.conftest import INVOICE_ACTIONS
from tests.state_sql import state_sql

NO_LOOPS = {"loop": {"repeats": 10_000}}


def config(ws: Workspace) -> str:
    return str(ws.root / "broker.yaml")


@pytest.fixture
def sqlite_ws(tmp_path: Path, upstream: FakeUpstream) -> Workspace:
    workspace = Workspace(tmp_path)  # SQLite, as every broker starts
    workspace.tool(
        "invoices", base_url=upstream.url, allow_private_network=True, actions=INVOICE_ACTIONS
    )
    return workspace


def test_migrate_makes_the_schema_of_an_empty_database(
    sqlite_ws: Workspace, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = Workspace(sqlite_ws.root, database_url=postgres_url)
    target.settings()
    assert main(["migrate", "--config", config(target)]) == 0
    assert "schema at version" in capsys.readouterr().out
    assert state_sql(target, "SELECT seq FROM audit_chain") == [(0,)]


def test_migrate_without_postgres_says_what_to_set(
    sqlite_ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_ws.settings()
    assert main(["migrate", "--config", config(sqlite_ws)]) == 2
    err = capsys.readouterr().err
    assert "set database_url" in err and "Traceback" not in err


def test_a_sqlite_broker_moves_into_postgres_with_nothing_lost(
    sqlite_ws: Workspace,
    upstream: FakeUpstream,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upstream.respond = lambda request: Reply(body={"ok": request.method})
    payer = sqlite_ws.agent(
        "payer",
        grants=[
            "invoices.list",
            {"tool": "invoices.pay", "approval": "never", "no_approval_because": "tests"},
        ],
        limits=NO_LOOPS,
    )
    asker = sqlite_ws.agent("asker", grants=["invoices.pay"], limits=NO_LOOPS)
    frozen = sqlite_ws.agent("frozen", grants=["invoices.list"], limits=NO_LOOPS)
    with sqlite_ws.broker() as broker, broker.admin() as admin:
        with broker.client(payer) as client:
            client.call("invoices.list", {})
            paid = client.call("invoices.pay", {"id": "INV-1", "amount": 5}, idempotency_key="p1")
        with broker.client(asker) as client, pytest.raises(ApprovalPending) as pending:
            client.call(
                "invoices.pay",
                {"id": "INV-2", "amount": 7},
                idempotency_key="p2",
                wait_for_approval=False,
            )
        admin.freeze("frozen", reason="under review")
    records = len(sqlite_ws.audit())
    posts = [r for r in upstream.requests if r.method == "POST"]
    assert len(posts) == 1

    moved = Workspace(sqlite_ws.root, database_url=postgres_url)
    moved.settings()  # the same data_dir, policies and tools; the state now on PostgreSQL
    assert main(["migrate", "--config", config(moved), "--from-sqlite"]) == 0
    out = capsys.readouterr().out
    assert "calls: 2 row(s)" in out and f"audit: {records} row(s)" in out

    assert main(["audit", "verify", "--config", config(moved)]) == 0
    assert f"ok: {records} record(s) chained" in capsys.readouterr().out

    with moved.broker() as broker, broker.admin() as admin:
        with broker.client(payer) as client:
            again = client.call("invoices.pay", {"id": "INV-1", "amount": 5}, idempotency_key="p1")
        assert again.call_id == paid.call_id  # answered from the moved store: not sent again
        admin.decide(pending.value.call_id, approve=True, reason="fine")
        with broker.client(asker) as client:
            decided = client.await_call(pending.value.call_id, wait_ms=20_000)
        assert decided.call_id == pending.value.call_id
        with broker.client(frozen) as client, pytest.raises(errors.AgentFrozen):
            client.call("invoices.list", {})
    assert len([r for r in upstream.requests if r.method == "POST"]) == 2  # p1 once, p2 once
    # the chain went on from the moved head and still verifies, as one chain
    assert main(["audit", "verify", "--config", config(moved)]) == 0
    assert len(moved.audit()) > records

    # a second migration into the used database is refused: two histories are not merged
    assert main(["migrate", "--config", config(moved), "--from-sqlite"]) == 4
    assert "already holds calls" in capsys.readouterr().err
