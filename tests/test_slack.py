"""The whole Slack round trip against a fake Slack on loopback: the question with the exact
arguments, signed clicks, approvers only, one execution per decision, the message updated."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from broker import errors
from broker.cli import main
from broker.client import ApprovalPending, BrokerClient
from broker.signing import AgentCredentials
from broker.testing import (
    FakeSlack,
    FakeSlackSocket,
    FakeUpstream,
    Reply,
    RunningBroker,
    Workspace,
    await_decision,
    eventually,
)

MASTER = base64.b64encode(b"s" * 32).decode()
APPROVER, STRANGER = "U024BE7LH", "U0STRANGER"
PAY = {"id": "INV-77", "amount": 4200, "memo": "x" * 4000}


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _secret(ws: Workspace, name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(value))
    assert main(["secrets", "set", name, "--config", str(ws.root / "broker.yaml")]) == 0


@pytest.fixture
def slack_ws(ws: Workspace, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    ws.tool(
        "invoices",
        base_url=ws_upstream(ws),
        allow_private_network=True,
        actions={
            "pay": {
                "effect": "write",
                "method": "POST",
                "path": "/invoices/{id}/pay",
                "arguments": {
                    "type": "object",
                    "required": ["id", "amount"],
                    "properties": {
                        "id": {"type": "string"},
                        "amount": {"type": "number"},
                        "memo": {"type": "string"},
                    },
                },
            }
        },
    )
    monkeypatch.setenv("BROKER_MASTER_KEY", MASTER)
    _slack_settings(ws, slack)
    _secret(ws, "slack-bot-token", "xoxb-fake-token-000", monkeypatch)
    _secret(ws, "slack-signing-secret", slack.signing_secret, monkeypatch)
    return ws


def ws_upstream(ws: Workspace) -> str:
    manifest = (ws.root / "tools/invoices.yaml").read_text()
    return next(
        line.split(": ", 1)[1] for line in manifest.splitlines() if line.startswith("base_url")
    )


def _slack_settings(ws: Workspace, slack: FakeSlack, **extra: Any) -> dict[str, Any]:
    settings = {
        "http_listen": "127.0.0.1:0",
        "approval_timer_interval": "100ms",
        "slack": {"api_url": slack.api_url, "channel": "C-APPROVALS"},
        **extra,
    }
    ws.settings(**settings)
    return settings


def _broker(ws: Workspace, slack: FakeSlack, **extra: Any) -> RunningBroker:
    return ws.broker(env={"BROKER_MASTER_KEY": MASTER}, **_slack_settings(ws, slack, **extra))


def _agent(ws: Workspace, **policy: Any) -> AgentCredentials:
    return ws.agent("payer", grants=["invoices.pay"], approvers=[APPROVER], **policy)


def _ask(client: BrokerClient, key: str = "pay-77") -> ApprovalPending:
    with pytest.raises(ApprovalPending) as raised:
        client.call(
            "invoices.pay",
            PAY,
            idempotency_key=key,
            intent="pay the cloud bill",
            task_id="month-end",
            wait_for_approval=False,
        )
    return raised.value


def test_the_question_the_click_the_execution_and_the_update(
    slack_ws: Workspace, slack: FakeSlack, upstream: FakeUpstream
) -> None:
    agent = _agent(slack_ws)
    upstream.respond = lambda request: Reply(body={"paid": True})
    with _broker(slack_ws, slack) as broker, broker.client(agent) as client:
        asked = _ask(client)
        assert "asked in Slack channel C-APPROVALS" in asked.note
        eventually(lambda: slack.posted("chat.postMessage"))
        (post,) = slack.posted("chat.postMessage")
        assert slack.calls[0].token == "xoxb-fake-token-000"
        text = json.dumps(post["blocks"])
        for shown in (
            "payer",
            "pay the cloud bill",
            "month-end",
            asked.call_id,
            "INV-77",
            "4200",
            "it is a write",
        ):
            assert shown in text
        memo = "".join(
            b["text"]["text"]
            for b in post["blocks"]
            if b["type"] == "section" and "text" in b and "```" in b["text"]["text"]
        )
        assert memo.count("x") >= 4000  # long values folded into several blocks, never cut
        buttons = [
            e["action_id"] for b in post["blocks"] if b["type"] == "actions" for e in b["elements"]
        ]
        assert buttons == ["approve", "deny", "freeze"]
        assert upstream.requests == []

        url = broker.http_url + "/slack/interactions"
        assert slack.click(url, asked.call_id, "approve", APPROVER) == 200
        result = client.await_call(asked.call_id, wait_ms=5000)
        assert result.result == {"paid": True}
        eventually(lambda: slack.posted("chat.update"))
        update = slack.posted("chat.update")[-1]
        assert update["ts"] == "1700000000.000001"
        assert f"Approved and done* by <@{APPROVER}>" in json.dumps(update["blocks"])
        assert "actions" not in [b["type"] for b in update["blocks"]]
    assert len(upstream.requests) == 1


def test_forged_stale_and_foreign_clicks_change_nothing(
    slack_ws: Workspace, slack: FakeSlack, upstream: FakeUpstream
) -> None:
    agent = _agent(slack_ws)
    with _broker(slack_ws, slack) as broker, broker.client(agent) as client:
        asked = _ask(client)
        url = broker.http_url + "/slack/interactions"
        assert slack.click(url, asked.call_id, "approve", APPROVER, secret="wrong") == 401
        stale = int(time.time()) - 6 * 60
        assert slack.click(url, asked.call_id, "approve", APPROVER, timestamp=stale) == 401
        assert slack.click(url, asked.call_id, "approve", STRANGER) == 200
        eventually(lambda: slack.posted("chat.postEphemeral"))
        assert "not an approver of payer" in slack.posted("chat.postEphemeral")[0]["text"]
        with broker.admin() as admin:
            (still,) = admin.list_approvals()
        assert still.state == "pending"
    assert upstream.requests == []


def test_a_double_click_executes_once(
    slack_ws: Workspace, slack: FakeSlack, upstream: FakeUpstream
) -> None:
    agent = _agent(slack_ws)
    upstream.respond = lambda request: Reply(body={"paid": True}, delay=0.3)
    with _broker(slack_ws, slack) as broker, broker.client(agent) as client:
        asked = _ask(client)
        url = broker.http_url + "/slack/interactions"
        assert slack.click(url, asked.call_id, "approve", APPROVER) == 200
        assert slack.click(url, asked.call_id, "approve", APPROVER) == 200
        assert client.await_call(asked.call_id, wait_ms=5000).state == "DONE"
        eventually(lambda: slack.posted("chat.postEphemeral"))
        assert "already" in slack.posted("chat.postEphemeral")[0]["text"]
    assert len(upstream.requests) == 1


def test_deny_and_a_click_after_expiry(
    slack_ws: Workspace, slack: FakeSlack, upstream: FakeUpstream
) -> None:
    # The call to deny is asked by an agent whose calls do not expire in 3 s: on a busy
    # machine the click could come after that, and the call expire before it was denied.
    agent = _agent(slack_ws)
    hasty = slack_ws.agent(
        "hasty",
        grants=["invoices.pay"],
        approvers=[APPROVER],
        expires_after="3s",
        escalate_after="1s",
    )
    with (
        _broker(slack_ws, slack) as broker,
        broker.client(agent) as client,
        broker.client(hasty) as hurried,
    ):
        denied = _ask(client, key="a")
        url = broker.http_url + "/slack/interactions"
        assert slack.click(url, denied.call_id, "deny", APPROVER) == 200
        with pytest.raises(errors.ApprovalDenied, match=f"slack:{APPROVER}"):
            client.await_call(denied.call_id, wait_ms=5000)
        late = _ask(hurried, key="b")
        eventually(lambda: any("thread_ts" in p for p in slack.posted("chat.postMessage")))
        reminder = next(p for p in slack.posted("chat.postMessage") if "thread_ts" in p)
        assert "Still waiting" in reminder["text"]
        with pytest.raises(errors.ApprovalExpired):
            await_decision(hurried, late.call_id)
        assert slack.click(url, late.call_id, "approve", APPROVER) == 200
        eventually(
            lambda: any("already expired" in p["text"] for p in slack.posted("chat.postEphemeral"))
        )
    assert upstream.requests == []


def test_the_freeze_button(slack_ws: Workspace, slack: FakeSlack, upstream: FakeUpstream) -> None:
    agent = _agent(slack_ws)
    with _broker(slack_ws, slack) as broker, broker.client(agent) as client:
        asked = _ask(client)
        url = broker.http_url + "/slack/interactions"
        assert slack.click(url, asked.call_id, "freeze", APPROVER) == 200
        with pytest.raises(errors.AgentFrozen, match=f"slack:{APPROVER}"):
            client.call("invoices.pay", PAY, idempotency_key="another")
    assert upstream.requests == []


def test_a_sealed_broker_refuses_clicks(
    slack_ws: Workspace, slack: FakeSlack, upstream: FakeUpstream
) -> None:
    agent = _agent(slack_ws)
    with (
        slack_ws.broker(env={}, **_slack_settings(slack_ws, slack)) as broker,
        broker.client(agent) as client,
    ):
        asked = _ask(client)
        assert (
            slack.click(broker.http_url + "/slack/interactions", asked.call_id, "approve", APPROVER)
            == 503
        )
    assert upstream.requests == []


def test_socket_mode_takes_clicks_without_inbound_http(
    ws: Workspace, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeSlackSocket() as socket:
        settings = {
            "slack": {"api_url": socket.api_url, "channel": "C-APPROVALS", "socket_mode": True}
        }
        ws.settings(**settings)
        monkeypatch.setenv("BROKER_MASTER_KEY", MASTER)
        _secret(ws, "slack-bot-token", "xoxb-fake-token-000", monkeypatch)
        _secret(ws, "slack-app-token", "xapp-fake-app-token", monkeypatch)
        agent = ws.agent("payer", approvers=[APPROVER], grants=[{"tool": "invoices.pay"}])
        upstream.respond = lambda request: Reply(body={"paid": True})
        with (
            ws.broker(env={"BROKER_MASTER_KEY": MASTER}, **settings) as broker,
            broker.client(agent) as client,
        ):
            eventually(lambda: socket.connected)
            with pytest.raises(ApprovalPending) as asked:
                client.call(
                    "invoices.pay",
                    {"id": "INV-1", "amount": 5},
                    idempotency_key="sm-1",
                    wait_for_approval=False,
                )
            assert socket.click(asked.value.call_id, "approve", APPROVER)
            assert client.await_call(asked.value.call_id, wait_ms=5000).state == "DONE"
        opened = [c for c in socket.calls if c.method == "apps.connections.open"]
        assert opened and opened[0].token == "xapp-fake-app-token"
    assert len(upstream.requests) == 1
