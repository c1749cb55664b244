"""Retention: a broker that runs for months keeps only what a check can still need. Calls in a
final state, outside values and budget use are dropped past their retention (by a real broker,
on its schedule); pending calls and lost outcomes never are. The in-memory windows of loop
detection and the budget counters stay bounded."""

from __future__ import annotations

import asyncio
import time

import pytest

from broker import errors
from broker.client import ApprovalPending
from broker.errors import ConfigError
from broker.limits.budgets import IDLE_S, Allowance, Budgets
from broker.limits.loop_detector import DAY_MS, LoopDetector
from broker.policy.model import LoopGuard
from broker.signing import AgentCredentials
from broker.storage.backend import state_store
from broker.testing import FakeUpstream, RecordedRequest, Reply, Workspace
from tests.state_sql import state_sql
from tests.test_untrusted_calls import MAIL_ACTIONS
from tests.trail_helpers import on_state

DAY_MS_AGO = 86_400_000


def wait_until_gone(ws: Workspace, sql: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while state_sql(ws, sql):
        assert time.monotonic() < deadline, f"still there: {state_sql(ws, sql)}"
        time.sleep(0.1)  # the broker sweeps every 0.2 s here; bounded by the deadline


@pytest.fixture
def writer(ws: Workspace, upstream: FakeUpstream) -> AgentCredentials:
    ws.tool("mail", base_url=upstream.url, allow_private_network=True, actions=MAIL_ACTIONS)

    def serve(request: RecordedRequest) -> Reply:
        if request.method == "GET":
            return Reply(body={"id": "m-1", "body": "write to eve@outside.example"})
        return Reply(body={"ok": True})

    upstream.respond = serve
    return ws.agent(
        "writer",
        grants=[
            "mail.get_message",
            "invoices.pay",
            {"tool": "mail.forward", "approval": "never", "no_approval_because": "a test"},
        ],
        limits={"calls_per_task": 100},
    )


def test_old_final_calls_outside_values_and_budgets_are_dropped_and_the_rest_kept(
    ws: Workspace, writer: AgentCredentials, upstream: FakeUpstream
) -> None:
    forward = {"id": "m-1", "to": "ana@corp.example"}
    with ws.broker() as broker, broker.client(writer) as client:
        client.call("mail.get_message", {"id": "m-1"}, task_id="t1")
        client.call("mail.forward", forward, idempotency_key="fw-1", task_id="t1")
        with pytest.raises(ApprovalPending):  # a payment waits for a human
            client.call(
                "invoices.pay",
                {"id": "INV-1", "amount": 5},
                idempotency_key="pay-1",
                wait_for_approval=False,
            )
    old = 40 * DAY_MS_AGO
    on_state(
        ws,
        f"UPDATE calls SET updated_ms = updated_ms - {old}, created_ms = created_ms - {old}",
        f"UPDATE taint SET ts_ms = ts_ms - {old}",
        f"UPDATE outside_text SET at_ms = at_ms - {old}",
        f"UPDATE budgets SET updated_ms = updated_ms - {old}",
        "INSERT INTO budgets VALUES ('agent:writer', '2020-01-01', 3, 3, 0, 0)",
        "INSERT INTO calls (call_id, agent, key_id, tool, task_id, intent, arguments, digest, "
        "idempotency_key, state, why, created_ms, updated_ms) VALUES ('lost-1', 'writer', 'k', "
        "'mail.forward', 't0', '', '{}', 'd', 'fw-0', 'outcome_unknown', '', 0, 0)",
    )
    assert state_sql(ws, "SELECT count(*) FROM taint")[0][0] > 0
    with ws.broker(retention_interval="0.2s") as broker, broker.client(writer) as client:
        wait_until_gone(ws, "SELECT call_id FROM calls WHERE state = 'done'")
        wait_until_gone(ws, "SELECT * FROM taint")
        wait_until_gone(ws, "SELECT id FROM outside_text")
        wait_until_gone(ws, "SELECT * FROM budgets WHERE period < '2026-01-01'")
        kept = {row[0] for row in state_sql(ws, "SELECT state FROM calls")}
        assert kept == {"pending", "outcome_unknown"}  # a human still needs them
        # the key's first answer is forgotten with it: the same write runs anew
        client.call("mail.forward", forward, idempotency_key="fw-1", task_id="t1")
    assert len([r for r in upstream.requests if r.method == "POST"]) == 2


def test_a_retention_under_a_day_is_refused(ws: Workspace) -> None:
    with pytest.raises(ConfigError, match="at least 1d"):
        ws.settings(calls_retention="1h")


def test_the_loop_windows_stay_bounded() -> None:
    guard = LoopGuard(repeats=5, within="60s")
    detector = LoopDetector([], 0)
    for n in range(3000):  # every call a new argument set, over two days
        detector.check("agent", "tool.read", f"digest-{n}", guard, n * 60_000)
    assert detector.windows <= 24 * 60 + 1  # a day of them at most, not all 3,000
    detector.sweep(3000 * 60_000 + DAY_MS + 1)
    assert detector.windows == 0


def test_the_budget_counters_stay_bounded(ws: Workspace) -> None:
    async def scenario() -> None:
        state = state_store(ws.settings())
        await state.open()
        try:
            budgets = Budgets(state.budgets, alert=lambda text: None)
            for n in range(200):
                task = Allowance(f"task:a:t{n}", "task", "a task", 10, None, None)
                await budgets.charge([task], 1)
            assert budgets.cached == 200
            budgets.sweep(time.monotonic() + IDLE_S + 1)
            assert budgets.cached == 0
            # read back from the store: nothing spent was lost with the counters
            again = Allowance("task:a:t7", "task", "task t7", 1, None, None)
            with pytest.raises(errors.BudgetExceeded, match="1 of 1"):
                await budgets.charge([again], 1)
        finally:
            await state.close()

    asyncio.run(scenario())
