"""Writes wait for a human: pending calls, CLI decisions, escalation, expiry, idempotent
retries, the kill switch; through a real broker, a recording upstream and the admin service."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from broker import errors
from broker.approvals.call_events import CallEvents
from broker.client import AdminClient, ApprovalPending, BrokerClient
from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, Reply, Workspace, await_decision
from tests.state_sql import state_sql

PAY = {"id": "INV-1", "amount": 120}


def payer(ws: Workspace, **policy: Any) -> AgentCredentials:
    return ws.agent("payer", grants=["invoices.pay", "invoices.list"], **policy)


def pending(client: BrokerClient, key: str = "pay-1", arguments: Any = PAY) -> ApprovalPending:
    with pytest.raises(ApprovalPending) as raised:
        client.call(
            "invoices.pay",
            arguments,
            idempotency_key=key,
            task_id="t1",
            intent="pay the paper supplier",
            wait_for_approval=False,
        )
    return raised.value


def test_a_write_waits_and_runs_once_an_operator_approves(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = payer(ws)
    upstream.respond = lambda request: Reply(body={"paid": True})
    with ws.broker() as broker, broker.client(agent) as client, broker.admin() as admin:
        asked = pending(client)
        assert "broker approve " + asked.call_id in asked.note
        assert upstream.requests == []
        (listed,) = admin.list_approvals()
        assert (listed.call_id, listed.agent, listed.tool, listed.state) == (
            asked.call_id,
            "payer",
            "invoices.pay",
            "pending",
        )
        assert listed.arguments_json == '{"amount":120,"id":"INV-1"}'
        assert "approved; it runs now" in admin.decide(asked.call_id, approve=True)
        result = client.await_call(asked.call_id, wait_ms=5000)
        assert (result.state, result.result) == ("DONE", {"paid": True})
        with pytest.raises(errors.AlreadyDecided, match="already"):
            admin.decide(asked.call_id, approve=False)
    assert len(upstream.requests) == 1
    decisions = [r.decision for r in ws.audit(asked.call_id)]
    assert decisions[:2] == ["received", "pending"]
    assert "done" in decisions


def test_a_denied_write_never_runs(ws: Workspace, upstream: FakeUpstream) -> None:
    agent = payer(ws)
    with ws.broker() as broker, broker.client(agent) as client, broker.admin() as admin:
        asked = pending(client)
        admin.decide(asked.call_id, approve=False, reason="not this month")
        with pytest.raises(errors.ApprovalDenied, match="not this month"):
            client.await_call(asked.call_id, wait_ms=1000)
        with pytest.raises(errors.ApprovalDenied):  # the same key gets the same answer
            client.call("invoices.pay", PAY, idempotency_key="pay-1")
    assert upstream.requests == []


def test_an_undecided_call_expires(ws: Workspace, upstream: FakeUpstream) -> None:
    agent = payer(ws, expires_after="1s", escalate_after="1s")
    with ws.broker(approval_timer_interval="100ms") as broker, broker.client(agent) as client:
        asked = pending(client)
        with pytest.raises(errors.ApprovalExpired):
            await_decision(client, asked.call_id)
    assert upstream.requests == []


def test_escalation_stops_the_agent_and_it_resumes_with_the_same_key(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = payer(ws, escalate_after="1s")
    with ws.broker() as broker, broker.client(agent) as client, broker.admin() as admin:
        began = time.monotonic()
        with pytest.raises(ApprovalPending) as stopped:
            client.call("invoices.pay", PAY, idempotency_key="pay-9")  # waits, then stops
        assert time.monotonic() - began >= 0.9
        again = pending(client, key="pay-9")
        assert again.call_id == stopped.value.call_id  # the same pending call, not a second
        assert len(admin.list_approvals()) == 1
        admin.decide(again.call_id, approve=True)
        result = client.await_call(again.call_id, wait_ms=5000)
        assert result.state == "DONE"
        retried = client.call("invoices.pay", PAY, idempotency_key="pay-9")
        assert retried.call_id == again.call_id
    assert len(upstream.requests) == 1


def test_idempotency_keys(ws: Workspace, upstream: FakeUpstream) -> None:
    agent = ws.agent(
        "payer",
        grants=[{"tool": "invoices.pay", "approval": "never", "no_approval_because": "test"}],
    )
    upstream.respond = lambda request: Reply(body={"paid": len(upstream.requests)})
    with ws.broker() as broker:
        with broker.client(agent) as client:
            with pytest.raises(errors.IdempotencyKeyRequired):
                client.call("invoices.pay", PAY)
            first = client.call("invoices.pay", PAY, idempotency_key="k1")
            again = client.call("invoices.pay", PAY, idempotency_key="k1")
            assert (again.call_id, again.result) == (first.call_id, {"paid": 1})
            with pytest.raises(errors.IdempotencyKeyReused, match="different request"):
                client.call("invoices.pay", {"id": "INV-1", "amount": 121}, idempotency_key="k1")
        broker.restart()
        with broker.client(agent) as client:
            after = client.call("invoices.pay", PAY, idempotency_key="k1")
            assert (after.call_id, after.result) == (first.call_id, {"paid": 1})
    assert len(upstream.requests) == 1


def test_a_retry_while_the_first_runs_is_call_in_progress(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = ws.agent(
        "payer",
        grants=[{"tool": "invoices.pay", "approval": "never", "no_approval_because": "test"}],
    )
    upstream.respond = lambda request: Reply(body={"paid": True}, delay=1.5)
    with ws.broker() as broker, broker.client(agent) as client:
        first = threading.Thread(
            target=lambda: client.call("invoices.pay", PAY, idempotency_key="slow")
        )
        first.start()
        deadline = time.monotonic() + 5
        while not upstream.requests and time.monotonic() < deadline:
            time.sleep(0.02)  # until the first call reached the upstream; bounded
        with pytest.raises(errors.CallInProgress):
            client.call("invoices.pay", PAY, idempotency_key="slow")
        first.join(10)
    assert len(upstream.requests) == 1


def test_a_write_failing_upstream_is_not_sent_again_on_retry(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = ws.agent(
        "payer",
        grants=[{"tool": "invoices.pay", "approval": "never", "no_approval_because": "test"}],
    )
    upstream.respond = lambda request: Reply(503, "try later")
    with ws.broker() as broker, broker.client(agent) as client:
        for _ in range(2):
            with pytest.raises(errors.UpstreamUnavailable):
                client.call("invoices.pay", PAY, idempotency_key="k5")
    assert len(upstream.requests) == 1


def test_a_freeze_takes_effect_on_the_next_request_everywhere(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = payer(ws)
    other = ws.agent("reader", grants=["invoices.list"])
    with ws.broker() as broker, broker.client(agent) as client, broker.admin() as admin:
        asked = pending(client)
        assert "1 pending call(s) cancelled" in admin.freeze("payer", reason="loops on INV-1")
        for attempt in (
            lambda: client.call("invoices.list", {}),
            lambda: client.list_tools(),
            lambda: client.await_call(asked.call_id, wait_ms=10),
        ):
            with pytest.raises(errors.AgentFrozen, match="loops on INV-1"):
                attempt()
        with broker.client(other) as reader:
            assert reader.call("invoices.list", {}).state == "DONE"
        broker.restart()
        with broker.client(agent) as client, broker.admin() as admin:
            with pytest.raises(errors.AgentFrozen):
                client.call("invoices.list", {})
            admin.unfreeze("payer")
            assert client.call("invoices.list", {}).state == "DONE"
            with pytest.raises(errors.ApprovalDenied, match="cancelled"):
                client.await_call(asked.call_id, wait_ms=10)
            admin.freeze(everyone=True, reason="incident 42")
            with (
                broker.client(other) as reader,
                pytest.raises(errors.AgentFrozen, match="every agent"),
            ):
                reader.call("invoices.list", {})
            admin.unfreeze(everyone=True)
    assert [r.path for r in upstream.requests] == ["/invoices", "/invoices"]
    rows = ws.audit()
    assert any(r.rpc == "freeze" and r.agent == "local-admin" for r in rows)


def _approved_before_the_stop(ws: Workspace, call_id: str) -> None:
    """The calls table as a broker stopped (or crashed) leaves it between a human's approval
    and the approved call's start: approved, not yet executing."""
    state_sql(
        ws,
        "UPDATE calls SET state = 'approved', decided_by = 'admin:local-admin' WHERE call_id = ?",
        (call_id,),
    )


def _state_once_run(admin: AdminClient, call_id: str, seconds: float = 10.0) -> str:
    """The stored call's state once it has left ``approved`` (it runs in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        states = {c.call_id: c.state for c in admin.list_approvals(include_decided=True)}
        if states.get(call_id) != "approved" or time.monotonic() > deadline:
            return states.get(call_id, "")
        time.sleep(0.05)  # polling the admin service; bounded by the deadline


def test_a_call_approved_before_a_stop_runs_once_at_the_next_start(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = payer(ws)
    upstream.respond = lambda request: Reply(body={"paid": True})
    with ws.broker() as broker:
        with broker.client(agent) as client:
            asked = pending(client)
        broker.stop()
        _approved_before_the_stop(ws, asked.call_id)
        broker.start()
        with broker.client(agent) as client:
            assert await_decision(client, asked.call_id).result == {"paid": True}
        broker.restart()  # and not again after that
        with broker.client(agent) as client:
            assert client.await_call(asked.call_id, wait_ms=100).result == {"paid": True}
    assert len(upstream.requests) == 1


def test_a_freeze_stops_an_approved_call_that_has_not_started(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = payer(ws)
    with ws.broker() as broker:
        with broker.client(agent) as client, broker.admin() as admin:
            asked = pending(client)
            admin.freeze("payer", reason="card stolen")
        broker.stop()
        # it was approved a moment before the freeze; the broker stopped before it ran
        _approved_before_the_stop(ws, asked.call_id)
        broker.start()
        with broker.client(agent) as client, broker.admin() as admin:
            assert _state_once_run(admin, asked.call_id) == "failed"
            admin.unfreeze("payer")  # the agent may ask again: its call stays refused
            with pytest.raises(errors.AgentFrozen, match="stolen"):
                await_decision(client, asked.call_id)
    assert upstream.requests == []
    final = [r for r in ws.audit(asked.call_id) if r.rpc == "call"][-1]
    assert (final.event, final.reason) == ("refused", "AGENT_FROZEN")


def test_agent_keys_cannot_use_the_admin_service(ws: Workspace, upstream: FakeUpstream) -> None:
    from broker.client import AdminClient

    agent = payer(ws)
    with ws.broker() as broker:
        impostor = AdminClient(broker.target, agent, broker_id=broker.settings.broker_id)
        with impostor, pytest.raises(errors.UnknownKey):
            impostor.freeze("reader", reason="not allowed")


def test_await_is_only_for_the_agent_that_made_the_call(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = payer(ws)
    other = ws.agent("reader", grants=["invoices.list"])
    with ws.broker() as broker, broker.client(agent) as client:
        asked = pending(client)
        with broker.client(other) as reader, pytest.raises(errors.UnknownCall):
            reader.await_call(asked.call_id, wait_ms=10)


def test_an_approval_is_bound_to_what_was_approved(ws: Workspace, upstream: FakeUpstream) -> None:
    agent = payer(ws, credentials={})
    with (
        ws.broker(reload_interval="0s") as broker,
        broker.client(agent) as client,
        broker.admin() as admin,
    ):
        asked = pending(client)
        # the policy changes while the call waits: the grant is gone
        ws.agent(
            "payer",
            grants=["invoices.list"],
            keys=[{"id": agent.key_id, "ed25519": agent.public_key_b64}],
        )
        assert broker.reload()
        admin.decide(asked.call_id, approve=True)
        with pytest.raises(errors.ToolNotGranted):
            client.await_call(asked.call_id, wait_ms=5000)
    assert upstream.requests == []


def test_the_operator_commands(
    ws: Workspace, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli import main

    agent = payer(ws)
    with ws.broker() as broker, broker.client(agent) as client:
        config = ["--config", str(ws.root / "broker.yaml")]
        # the CLI reaches the broker at the config's address
        ws.settings(listen=broker.target)
        asked = pending(client)
        assert main(["approvals", "list", *config]) == 0
        out = capsys.readouterr().out
        assert f"{asked.call_id}  pending" in out
        assert '{"amount":120,"id":"INV-1"}' in out
        with pytest.raises(SystemExit):  # a denial needs a reason
            main(["deny", asked.call_id, *config])
        capsys.readouterr()
        assert main(["approve", asked.call_id, "--reason", "ok by finance", *config]) == 0
        assert "approved; it runs now" in capsys.readouterr().out
        assert client.await_call(asked.call_id, wait_ms=5000).state == "DONE"
        assert main(["freeze", "payer", "--reason", "audit", *config]) == 0
        assert "agent 'payer' frozen" in capsys.readouterr().out
        with pytest.raises(errors.AgentFrozen):
            client.call("invoices.list", {})
        assert main(["unfreeze", "payer", *config]) == 0
        assert main(["freeze", *config]) == 2  # neither an agent nor --all
    assert len(upstream.requests) == 1


AWAIT_BOUND_S = 20.0  # the write takes ~1 s; without a wake-up, Await waits its full 60 s


def test_await_of_a_write_still_running_answers_when_it_ends_not_at_its_timeout(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    never = {"tool": "invoices.pay", "approval": "never", "no_approval_because": "a test"}
    agent = ws.agent("payer", grants=[never])
    upstream.respond = lambda request: Reply(body={"paid": True}, delay=1.0)
    with ws.broker(await_max_wait="60s") as broker, broker.client(agent, timeout=90) as client:
        first: dict[str, Any] = {}
        paying = threading.Thread(
            target=lambda: first.update(done=client.call("invoices.pay", PAY, idempotency_key="k"))
        )
        paying.start()
        deadline = time.monotonic() + 10
        while not upstream.requests and time.monotonic() < deadline:
            time.sleep(0.02)  # until the write reached the upstream; bounded
        with pytest.raises(errors.CallInProgress) as running:
            client.call("invoices.pay", PAY, idempotency_key="k")
        call_id = str(running.value).split("call ", 1)[1].split()[0]
        began = time.monotonic()
        result = client.await_call(call_id, wait_ms=60_000)
        waited = time.monotonic() - began
        paying.join(30)
    assert result.result == {"paid": True} and result.call_id == call_id
    assert waited < AWAIT_BOUND_S, f"Await waited {waited:.1f} s for a write that took ~1 s"
    assert len(upstream.requests) == 1
    assert first["done"].call_id == call_id


def test_an_await_that_times_out_leaves_nothing_behind() -> None:
    async def waits() -> list[int]:
        events = CallEvents()
        await events.wait("c1", 0.01)  # nobody woke it
        after_timeout = events.waiting()
        both = asyncio.gather(events.wait("c2", 30), events.wait("c2", 30))
        await asyncio.sleep(0.01)  # both waiters registered (one turn of the loop is enough)
        during = events.waiting()
        events.wake("c2")
        await asyncio.wait_for(both, 10)  # woken, not timed out
        return [after_timeout, during, events.waiting()]

    assert asyncio.run(waits()) == [0, 1, 0]
