"""A running broker takes a new policy set at once, or refuses a broken one and keeps the old."""

from __future__ import annotations

import time

import pytest
import yaml

from broker import errors
from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, Workspace


def _policy(credentials: AgentCredentials, grants: list[str]) -> str:
    keys = [{"id": credentials.key_id, "ed25519": credentials.public_key_b64}]
    return yaml.safe_dump(
        {"agent": credentials.agent, "keys": keys, "grants": [{"tool": g} for g in grants]}
    )


def test_reload_puts_a_new_set_in_force_and_audits_its_hash(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    credentials = ws.agent("reader", grants=["invoices.list"])
    with ws.broker(reload_interval="0s") as broker, broker.client(credentials) as client:
        before = client.call("invoices.list", {})
        with pytest.raises(errors.ToolNotGranted):
            client.call("invoices.get", {"id": "INV-1"})
        ws.write("policies/reader.yaml", _policy(credentials, ["invoices.list", "invoices.get"]))
        assert broker.reload()
        after = client.call("invoices.get", {"id": "INV-1"})
    first = ws.audit(before.call_id)[0].policy_hash
    second = ws.audit(after.call_id)[0].policy_hash
    assert first != second
    assert len(second) == 64


def test_a_broken_set_is_refused_and_the_old_one_stays(
    ws: Workspace, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = ws.agent("reader", grants=["invoices.list"])
    with ws.broker(reload_interval="0s") as broker, broker.client(credentials) as client:
        ws.write("policies/reader.yaml", "agent: reader\ngrants:\n  - tool: invoices.refund\n")
        assert not broker.reload()
        assert client.call("invoices.list", {}).state == "DONE"  # old keys, old grants
    assert "policy reload refused; the set in force stays" in caplog.text
    assert "invoices has no action 'refund'" in caplog.text


def test_a_changed_file_is_picked_up_without_a_signal(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    credentials = ws.agent("reader", grants=["invoices.list", "invoices.get"])
    with ws.broker(reload_interval="100ms") as broker, broker.client(credentials) as client:
        assert client.call("invoices.get", {"id": "INV-1"}).state == "DONE"
        ws.write("policies/reader.yaml", _policy(credentials, ["invoices.list"]))
        deadline = time.monotonic() + 10
        refused = False
        polls = 0
        while not refused and time.monotonic() < deadline:
            polls += 1
            try:
                client.call("invoices.get", {"id": f"INV-{polls}"})  # not a loop: new arguments
                time.sleep(0.05)  # polling a running broker, bounded by the deadline above
            except errors.ToolNotGranted:
                refused = True
    assert refused, "the broker did not take the changed policy within 10 s"
