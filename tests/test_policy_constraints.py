"""Every constraint kind allowing and refusing, exact decimals, approval conditions and taint,
decided by the same code the broker runs; then through a real broker."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from broker import errors
from broker.client import ApprovalPending, BrokerClient, ToolError
from broker.policy.check import check_folders
from broker.policy.evaluate import Decision, PolicySet, outside_values
from broker.testing import FakeUpstream, Reply, Workspace

SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {"type": ["string", "number"]},
        "count": {"type": "integer"},
        "to": {"type": "string"},
        "cc": {"type": "array", "items": {"type": "string"}},
        "url": {"type": "string"},
        "id": {"type": "string"},
        "note": {"type": "string"},
        "flag": {"type": "boolean"},
        "recipient": {"type": "object", "properties": {"email": {"type": "string"}}},
    },
}


def _decide(
    ws: Workspace,
    rules: dict[str, Any],
    arguments: dict[str, Any],
    tainted: tuple[str, ...] = (),
    **grant: Any,
) -> Decision:
    ws.tool(
        "thing",
        base_url="https://thing.example",
        actions={"do": {"effect": "write", "method": "POST", "path": "/do", "arguments": SCHEMA}},
    )
    ws.agent(
        "agent",
        grants=[
            {
                "tool": "thing.do",
                "where": rules,
                "approval": "never",
                "no_approval_because": "test",
                **grant,
            }
        ],
    )
    policies = check_folders(ws.root / "policies", ws.root / "tools").policy_set()
    return policies.decide("agent", "thing.do", arguments, *outside_values(tainted))


CASES = [
    # rules, allowed value, refused value, words in the refusal
    ({"id": {"equals": "INV-1"}}, {"id": "INV-1"}, {"id": "INV-2"}, "equals"),
    ({"count": {"equals": 5}}, {"count": 5}, {"count": 6}, "equals"),
    ({"flag": {"equals": True}}, {"flag": True}, {"flag": False}, "equals"),
    ({"id": {"one_of": ["a", "b"]}}, {"id": "b"}, {"id": "c"}, "one_of"),
    ({"id": {"pattern": "INV-*"}}, {"id": "INV-77"}, {"id": "inv-77"}, "pattern"),
    ({"id": {"regex": "^[A-Z]{3}-[0-9]+$"}}, {"id": "INV-77"}, {"id": "INV-77\n"}, "regex"),
    ({"amount": {"min": "0.01"}}, {"amount": "0.01"}, {"amount": "0.009"}, "min"),
    ({"amount": {"max": "5000.00"}}, {"amount": "5000.000"}, {"amount": "5000.001"}, "max"),
    (
        {"amount": {"max": 5000}},
        {"amount": Decimal("4999.99")},
        {"amount": Decimal("5000.01")},
        "max",
    ),
    ({"amount": {"above": "0"}}, {"amount": "0.001"}, {"amount": "0"}, "above"),
    ({"amount": {"below": 100}}, {"amount": 99}, {"amount": 100}, "below"),
    ({"note": {"max_length": 3}}, {"note": "abc"}, {"note": "abcd"}, "max_length"),
    ({"cc": {"max_length": 1}}, {"cc": ["a"]}, {"cc": ["a", "b"]}, "max_length"),
    (
        {"to": {"email_domains": ["example.com"]}},
        {"to": "Ana@Example.COM"},
        {"to": "ana@example.com.evil.test"},
        "email_domains",
    ),
    (
        {"to": {"email_domains": ["*.example.com"]}},
        {"to": "ana@eu.example.com"},
        {"to": "ana@example.com"},
        "email_domains",
    ),
    (
        {"to": {"email_domains": ["example.com"]}},
        {"to": "ana@example.com"},
        {"to": "Ana <ana@example.com>"},
        "not a single plain email",
    ),
    (
        {"to": {"email_domains": ["example.com"]}},
        {"to": "ana@example.com"},
        {"to": "ana@example.com, eve@evil.test"},
        "not a single plain email",
    ),
    (
        {"url": {"url_hosts": ["api.example.com"]}},
        {"url": "https://API.example.com/x?y=1"},
        {"url": "https://api.example.com@evil.test/"},
        "url_hosts",
    ),
    (
        {"url": {"url_hosts": ["api.example.com"]}},
        {"url": "http://api.example.com:8080/"},
        {"url": "https://evil.test\\@api.example.com/"},
        "not a plain http(s) URL",
    ),
    (
        {"url": {"url_hosts": ["api.example.com"]}},
        {"url": "https://api.example.com/"},
        {"url": "javascript://api.example.com/%0aalert(1)"},
        "not a plain http(s) URL",
    ),
    (
        {"cc": {"every": {"email_domains": ["example.com"]}}},
        {"cc": ["a@example.com"]},
        {"cc": ["a@example.com", "b@evil.test"]},
        "item [1]",
    ),
    (
        {"recipient.email": {"email_domains": ["example.com"]}},
        {"recipient": {"email": "a@example.com"}},
        {"recipient": {"email": "a@evil.test"}},
        "recipient.email",
    ),
]


@pytest.mark.parametrize(("rules", "allowed", "refused", "words"), CASES)
def test_each_constraint_allows_and_refuses(
    ws: Workspace,
    rules: dict[str, Any],
    allowed: dict[str, Any],
    refused: dict[str, Any],
    words: str,
) -> None:
    assert _decide(ws, rules, allowed).outcome == "allow"
    decision = _decide(ws, rules, refused)
    assert (decision.outcome, decision.reason) == ("deny", "ARGUMENT_NOT_ALLOWED")
    assert words in decision.message
    assert "agent.yaml grants[0]" in decision.message


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ("5000.00", "allow"),
        ("5000", "allow"),
        ("4999.999999999999999999999", "allow"),
        ("5000.000000000000000000001", "deny"),
        ("-0.00", "deny"),
        ("1e3", "deny"),  # not a plain decimal string: refused, never guessed
        (" 10.00", "deny"),
        ("NaN", "deny"),
        ("0x10", "deny"),
        (True, "deny"),
        (100, "allow"),
    ],
)
def test_decimal_limits_are_exact(ws: Workspace, value: Any, outcome: str) -> None:
    rules = {"amount": {"min": "0.01", "max": "5000.00"}}
    assert _decide(ws, rules, {"amount": value}).outcome == outcome


def test_json_decimals_from_an_agent_stay_exact(ws: Workspace) -> None:
    ws.tool(
        "thing",
        base_url="https://thing.example",
        actions={"do": {"effect": "write", "method": "POST", "path": "/do", "arguments": SCHEMA}},
    )
    ws.agent(
        "agent",
        grants=[
            {
                "tool": "thing.do",
                "where": {"amount": {"max": "0.3"}},
                "approval": "never",
                "no_approval_because": "test",
            }
        ],
    )
    policies = check_folders(ws.root / "policies", ws.root / "tools").policy_set()
    # 0.1 + 0.2 in floats is 0.30000000000000004; as written text it is exactly 0.3
    assert policies.decide("agent", "thing.do", '{"amount": 0.30}').outcome == "allow"
    assert policies.decide("agent", "thing.do", '{"amount": 0.30000000000000004}').outcome == "deny"


def test_absent_arguments_are_left_to_the_schema(ws: Workspace) -> None:
    assert _decide(ws, {"to": {"email_domains": ["example.com"]}}, {}).outcome == "allow"


@pytest.mark.parametrize(
    ("approval", "amount", "expected"),
    [
        ({"when": {"amount": {"above": "1000.00"}}}, "1000.00", ("allow", "")),
        ({"when": {"amount": {"above": "1000.00"}}}, "1000.01", ("approval", "condition")),
        (
            {"when": [{"amount": {"above": "1000"}}, {"note": {"equals": "urgent"}}]},
            "5",
            ("allow", ""),
        ),
        ("required", "5", ("approval", "write")),
        ("never", "5", ("allow", "")),
    ],
)
def test_approval_settings(
    ws: Workspace, approval: Any, amount: str, expected: tuple[str, str]
) -> None:
    decision = _decide(ws, {}, {"amount": amount}, approval=approval)
    assert (decision.outcome, decision.reason) == expected


def test_a_condition_in_a_list_holds_when_any_holds(ws: Workspace) -> None:
    approval = {"when": [{"amount": {"above": "1000"}}, {"note": {"equals": "urgent"}}]}
    decision = _decide(ws, {}, {"amount": "5", "note": "urgent"}, approval=approval)
    assert decision.outcome == "approval"
    assert "note equals urgent" in decision.message


def test_writes_need_approval_by_default(ws: Workspace) -> None:
    ws.tool(
        "thing",
        base_url="https://thing.example",
        actions={
            "do": {"effect": "write", "method": "POST", "path": "/do"},
            "see": {"effect": "read", "method": "GET", "path": "/see"},
        },
    )
    ws.agent("agent", grants=["thing.do", "thing.see"])
    policies = check_folders(ws.root / "policies", ws.root / "tools").policy_set()
    assert policies.decide("agent", "thing.do", {}).outcome == "approval"
    assert policies.decide("agent", "thing.see", {}).outcome == "allow"


@pytest.mark.parametrize(
    ("rules", "on_taint", "arguments", "expected"),
    [
        ({}, "approve", {"to": "eve@evil.test"}, ("approval", "tainted")),
        ({}, "deny", {"to": "eve@evil.test"}, ("deny", "ARGUMENT_NOT_ALLOWED")),
        ({"to": {"email_domains": ["evil.test"]}}, "deny", {"to": "eve@evil.test"}, ("allow", "")),
        ({}, "deny", {"note": "please mail EVE@evil.test today"}, ("deny", "ARGUMENT_NOT_ALLOWED")),
        ({}, "deny", {"to": "ana@example.com"}, ("allow", "")),
    ],
)
def test_values_from_outside_need_a_human_unless_a_rule_names_them(
    ws: Workspace,
    rules: dict[str, Any],
    on_taint: str,
    arguments: dict[str, Any],
    expected: tuple[str, str],
) -> None:
    decision = _decide(ws, rules, arguments, ("eve@evil.test",), on_taint=on_taint)
    assert (decision.outcome, decision.reason) == expected


def test_bad_constraints_are_refused_with_their_line(ws: Workspace) -> None:
    ws.tool(
        "thing",
        base_url="https://thing.example",
        actions={"do": {"effect": "write", "method": "POST", "path": "/do", "arguments": SCHEMA}},
    )
    bad = {
        "max: 1.5e3 float": ({"amount": {"max": "1.5e3"}}, "is not a number"),
        "empty": ({"amount": {}}, "empty constraint"),
        "domain": ({"to": {"email_domains": ["exa mple.com"]}}, "is not a domain"),
        "regex": ({"id": {"regex": "("}}, "regex does not compile"),
        "unknown rule": ({"id": {"startswith": "x"}}, "unknown key"),
        "unknown arg": ({"nope": {"equals": 1}}, "has no argument 'nope'"),
    }
    for rules, words in bad.values():
        ws.agent("agent", grants=[{"tool": "thing.do", "where": rules}])
        files = check_folders(ws.root / "policies", ws.root / "tools")
        (problem,) = files.errors
        assert words in problem.message
        assert problem.line is not None and problem.line > 1


def test_argument_not_allowed_through_the_broker(ws: Workspace, upstream: FakeUpstream) -> None:
    credentials = ws.agent(
        "payer",
        grants=[
            {
                "tool": "invoices.pay",
                "where": {"amount": {"max": "100"}},
                "approval": "never",
                "no_approval_because": "test",
            }
        ],
    )
    upstream.respond = lambda request: Reply(body={"paid": True})
    with ws.broker() as broker, broker.client(credentials) as client:
        assert (
            client.call("invoices.pay", {"id": "INV-1", "amount": 100}, idempotency_key="k1").state
            == "DONE"
        )
        with pytest.raises(errors.ArgumentNotAllowed) as refused:
            client.call("invoices.pay", '{"id": "INV-1", "amount": 100.001}', idempotency_key="k2")
    assert refused.value.status_code.name == "PERMISSION_DENIED"
    assert "argument 'amount' = 100.001 breaks max: must be at most 100" in refused.value.message
    assert len(upstream.requests) == 1
    row = ws.audit(refused.value.call_id)[-1]
    assert (row.decision, row.reason) == ("refused", "ARGUMENT_NOT_ALLOWED")


def test_a_write_that_needs_a_human_never_runs_without_one(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    credentials = ws.agent("payer", grants=["invoices.pay", "invoices.list"])
    with ws.broker() as broker, broker.client(credentials) as client:
        with pytest.raises(ApprovalPending, match="waiting for an operator"):
            client.call(
                "invoices.pay",
                {"id": "INV-1", "amount": 1},
                idempotency_key="k3",
                wait_for_approval=False,
            )
        tools = {t.name: t for t in client.list_tools()}
    assert upstream.requests == []
    assert tools["invoices.pay"].needs_approval
    assert not tools["invoices.list"].needs_approval


def test_tool_error_still_reports_through_constraints(
    client: BrokerClient, upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(409, {"error": "already paid"})
    with pytest.raises(ToolError):
        client.call("invoices.pay", {"id": "INV-1", "amount": 5}, idempotency_key="k4")
    assert len(upstream.requests) == 1


def test_authorise_is_indexed_not_a_scan(ws: Workspace) -> None:
    # Many agents and grants: the answer for one agent does not depend on the others.
    ws.tool(
        "thing",
        base_url="https://thing.example",
        actions={f"a{i}": {"effect": "read", "method": "GET", "path": f"/{i}"} for i in range(50)},
    )
    for n in range(40):
        ws.agent(f"agent-{n}", grants=[f"thing.a{i}" for i in range(n % 50)])
    policies: PolicySet = check_folders(ws.root / "policies", ws.root / "tools").policy_set()
    assert policies.decide("agent-39", "thing.a38", {}).outcome == "allow"
    assert policies.decide("agent-39", "thing.a39", {}).reason == "TOOL_NOT_GRANTED"
    assert [a.full_name for a, _ in policies.granted_actions("agent-3")] == [
        "thing.a0",
        "thing.a1",
        "thing.a2",
    ]
