"""kill -9 between a write's intent and its outcome: after the restart the write is
OUTCOME_UNKNOWN, never run again, and listed for a human to reconcile."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from broker import errors
from broker.client import BrokerClient
from broker.testing import FakeUpstream, Reply, Workspace
from tests.broker_process import bound_port, start_broker, wait_serving

PAY = {"id": "INV-9", "amount": 10}


def test_a_write_cut_off_by_kill_9_is_outcome_unknown_after_restart(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    agent = ws.agent(
        "payer",
        grants=[{"tool": "invoices.pay", "approval": "never", "no_approval_because": "test"}],
    )
    ws.settings(listen="127.0.0.1:0")
    config = str(ws.root / "broker.yaml")
    upstream.respond = lambda request: Reply(body={"paid": True}, delay=5)
    log = ws.root / "broker.log"
    first = start_broker(config, log)
    try:
        listen = f"127.0.0.1:{bound_port(first, log)}"
        with BrokerClient(listen, agent, broker_id="broker.test", timeout=15) as client:
            wait_serving(client)
            outcome: list[BaseException] = []

            def pay() -> None:
                try:
                    client.call("invoices.pay", PAY, idempotency_key="crash-1")
                except BaseException as exc:  # the broker dies under this call
                    outcome.append(exc)

            paying = threading.Thread(target=pay)
            paying.start()
            deadline = time.monotonic() + 10
            while not upstream.requests and time.monotonic() < deadline:
                time.sleep(0.02)  # until the write reached the upstream; bounded
            assert len(upstream.requests) == 1
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            paying.join(20)
            assert outcome and isinstance(outcome[0], errors.Unavailable)
    finally:
        if first.poll() is None:
            first.kill()

    with ws.broker(listen="127.0.0.1:0") as broker, broker.client(agent) as client:
        with pytest.raises(errors.OutcomeUnknown, match="will not run again") as unknown:
            client.call("invoices.pay", PAY, idempotency_key="crash-1")
        assert unknown.value.status_code.name == "UNKNOWN"
        with broker.admin() as admin:
            (listed,) = admin.list_approvals()
            assert (listed.state, listed.tool) == ("outcome_unknown", "invoices.pay")
            admin.reconcile(listed.call_id, note="the bank shows one payment of 10.00")
            assert admin.list_approvals() == []
        with pytest.raises(errors.OutcomeUnknown, match="the bank shows one payment"):
            client.call("invoices.pay", PAY, idempotency_key="crash-1")
    assert len(upstream.requests) == 1
