"""The daily digest against a fixture trail with known counts, written by the real store."""

from __future__ import annotations

import asyncio
import base64
import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from broker.cli import main
from broker.digest import AgentDay, render
from broker.digest import daily as daily_of
from broker.storage.records import AuditRow
from broker.storage.sqlite_audit import SqliteAuditReader
from broker.storage.sqlite_schema import audit_database
from broker.testing import FakeSlack, Workspace
from tests.trail_helpers import opened_trail

DAY = date(2026, 11, 20)
HOUR = 3_600_000


def _ms(day: date, hour: float = 12.0) -> int:
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000
    return int(midnight + hour * HOUR)


def _row(
    ts: int,
    agent: str,
    event: str,
    *,
    call_id: str = "c",
    tool: str = "t.read",
    decision: str = "done",
    reason: str = "",
    latency_ms: float = 1.0,
    cost: int = 0,
    rpc: str = "call",
) -> AuditRow:
    return AuditRow(
        ts_ms=ts,
        call_id=call_id,
        rpc=rpc,
        agent=agent,
        key_id="k",
        nonce="",
        tool=tool,
        task_id="",
        intent="",
        args_digest="",
        decision=decision,
        reason=reason,
        upstream_status=None,
        latency_us=int(latency_ms * 1000),
        policy_hash="p",
        detail="{}",
        event=event,
        cost=cost,
    )


def fixture_rows() -> list[AuditRow]:
    rows = []
    for back in range(1, 8):  # the week before: steady makes 2 calls a day, burner 1
        day = date.fromordinal(DAY.toordinal() - back)
        rows += [_row(_ms(day, 9), "steady", "executed"), _row(_ms(day, 10), "steady", "executed")]
        rows += [
            _row(_ms(day, 11), "burner", "decided", cost=5),
            _row(_ms(day, 11), "burner", "executed"),
        ]
    yesterday = date.fromordinal(DAY.toordinal() - 1)
    rows.append(
        _row(
            _ms(yesterday, 23),
            "burner",
            "pending",
            call_id="late",
            decision="pending",
            tool="t.pay",
        )
    )
    # the day itself
    rows += [
        _row(_ms(DAY, 1), "steady", "executed", latency_ms=10),
        _row(_ms(DAY, 2), "steady", "executed", latency_ms=20, tool="t.list"),
        _row(
            _ms(DAY, 3),
            "steady",
            "refused",
            decision="refused",
            reason="TOOL_NOT_GRANTED",
            latency_ms=1,
        ),
        _row(
            _ms(DAY, 4),
            "steady",
            "refused",
            decision="refused",
            reason="UPSTREAM_RATE_LIMITED",
            latency_ms=2,
        ),
        _row(
            _ms(DAY, 5),
            "steady",
            "failed",
            decision="failed",
            reason="UPSTREAM_UNAVAILABLE",
            latency_ms=3,
        ),
    ]
    rows.append(_row(_ms(DAY, 5.5), "local-admin", "freeze", rpc="freeze"))  # an operator
    for n in range(10):
        rows += [
            _row(_ms(DAY, 6 + n / 10), "burner", "decided", cost=5, call_id=f"b{n}"),
            _row(_ms(DAY, 6 + n / 10), "burner", "executed", call_id=f"b{n}", latency_ms=5),
        ]
    rows += [
        _row(_ms(DAY, 7), "burner", "pending", call_id="p1", decision="pending", tool="t.pay"),
        _row(
            _ms(DAY, 7) + 30_000,
            "burner",
            "approved",
            call_id="p1",
            rpc="event",
            decision="approved",
            tool="t.pay",
        ),
        _row(_ms(DAY, 8), "burner", "pending", call_id="p2", decision="pending", tool="t.pay"),
        _row(
            _ms(DAY, 8) + 90_000,
            "burner",
            "denied",
            call_id="p2",
            rpc="event",
            decision="denied",
            tool="t.pay",
        ),
        _row(
            _ms(DAY, 9),
            "burner",
            "expired",
            call_id="late",
            rpc="event",
            decision="expired",
            tool="t.pay",
        ),
    ]
    return rows


@pytest.fixture
def database(tmp_path: Path) -> Path:
    async def write() -> None:
        async with opened_trail(tmp_path / "broker.db") as trail:
            for row in fixture_rows():
                await trail.append(row)

    asyncio.run(write())
    return tmp_path / "broker.db"


def daily(database: Path, day: date) -> list[AgentDay]:
    async def read() -> list[AgentDay]:
        reader = SqliteAuditReader(database)
        try:
            return await daily_of(reader, day)
        finally:
            await reader.close()

    return asyncio.run(read())


def _move_into(ws: Workspace, database: Path) -> None:
    """Put the fixture's databases where the workspace's config looks for them."""
    (ws.root / "data").mkdir()
    database.rename(ws.database)
    audit_database(database).rename(audit_database(ws.database))  # the trail lives beside it


def test_the_figures_of_a_known_day(database: Path) -> None:
    burner, steady = daily(database, DAY)  # the operator's freeze is no agent's day
    assert burner.agent == "burner"
    assert burner.calls == 12  # 10 executed, 2 asked
    assert (burner.asked, burner.granted, burner.denied, burner.expired) == (2, 1, 1, 1)
    assert burner.median_decision == 60.0  # 30 s and 90 s
    assert burner.cost == 50
    assert burner.tools.most_common(1) == [("t.read", 10)]
    assert burner.anomalies == [
        "calls 12 is more than 3x the 7-day median (1)",
        "cost units 50 is more than 3x the 7-day median (5)",
    ]
    assert steady.calls == 5
    assert dict(steady.refusals) == {"TOOL_NOT_GRANTED": 1, "UPSTREAM_RATE_LIMITED": 1}
    assert steady.upstream_429 == 1
    assert steady.errors == 1
    assert (steady.latency(0.5), steady.latency(0.99)) == (3.0, 20.0)
    assert steady.anomalies == []


def test_text_and_markdown(database: Path) -> None:
    report = daily(database, DAY)
    text = render(report, DAY, markdown=False)
    assert text.startswith("Agents on 2026-11-20 (UTC)")
    assert "  approvals: 2 asked, 1 granted, 1 denied, 1 expired; 60s median to a decision" in text
    assert "  ANOMALY: calls 12 is more than 3x the 7-day median (1)" in text
    markdown = render(report, DAY, markdown=True)
    assert "### steady" in markdown
    assert "- refusals" not in markdown
    assert "- calls: 5; refusals: TOOL_NOT_GRANTED 1, UPSTREAM_RATE_LIMITED 1" in markdown


@pytest.mark.sqlite_only  # its day of records is built in an audit.db file
def test_the_command_with_budgets_from_the_policies(
    ws: Workspace, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.tool(
        "t",
        base_url="https://t.example",
        actions={"read": {"effect": "read", "method": "GET", "path": "/"}},
    )
    ws.agent("burner", grants=["t.read"], limits={"cost_per_day": 40, "calls_per_day": 100})
    ws.settings()
    _move_into(ws, database)
    code = main(
        ["report", "daily", "--config", str(ws.root / "broker.yaml"), "--date", "2026-11-20"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "calls: 12 of 100" in out
    assert "cost units: 50 of 40" in out
    assert (
        main(["report", "daily", "--config", str(ws.root / "broker.yaml"), "--date", "yesterday"])
        == 2
    )


@pytest.mark.sqlite_only  # its day of records is built in an audit.db file
def test_the_digest_is_posted_to_slack_with_the_stored_token(
    ws: Workspace,
    database: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = str(ws.root / "broker.yaml")
    _move_into(ws, database)
    monkeypatch.setenv("BROKER_MASTER_KEY", base64.b64encode(b"m" * 32).decode())
    with FakeSlack() as slack:
        slack_section = {"api_url": slack.api_url, "channel": "C-DIGEST"}
        ws.settings(http_listen="127.0.0.1:0", slack=slack_section)
        monkeypatch.setattr("sys.stdin", io.StringIO("xoxb-digest-token"))
        assert main(["secrets", "set", "slack-bot-token", "--config", config]) == 0
        code = main(["report", "daily", "--config", config, "--date", "2026-11-20", "--post"])
    assert code == 0
    (post,) = [call for call in slack.calls if call.method == "chat.postMessage"]
    assert post.token == "xoxb-digest-token"
    assert post.payload["channel"] == "C-DIGEST"
    assert "burner" in post.payload["text"]
    assert "calls: 12" in post.payload["text"]
    assert "posted to Slack" in capsys.readouterr().err


@pytest.mark.sqlite_only  # its day of records is built in an audit.db file
def test_posting_without_slack_configured_says_what_is_missing(
    ws: Workspace, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.settings()
    _move_into(ws, database)
    code = main(
        [
            "report",
            "daily",
            "--config",
            str(ws.root / "broker.yaml"),
            "--date",
            "2026-11-20",
            "--post",
        ]
    )
    assert code == 2
    assert "no slack section to post to" in capsys.readouterr().err
