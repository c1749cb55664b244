"""A signed call through a real broker to a recording upstream, and each way it can end."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from broker import errors
from broker.client import AsyncBrokerClient, BrokerClient, ToolError
from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, Reply, RunningBroker, Workspace
from tests.trail_helpers import trail_locked


def test_a_good_read_reaches_the_upstream_and_returns_done(
    client: BrokerClient, upstream: FakeUpstream, ws: Workspace
) -> None:
    upstream.respond = lambda request: Reply(body={"invoices": [{"id": "INV-1"}]})

    result = client.call(
        "invoices.list", {"supplier": "ACME", "limit": 5}, task_id="t-1", intent="month end"
    )

    assert result.state == "DONE"
    assert result.upstream_status == 200
    assert result.result == {"invoices": [{"id": "INV-1"}]}
    (request,) = upstream.requests
    assert request.method == "GET"
    assert request.path == "/invoices"
    assert request.query == [("supplier", "ACME"), ("limit", "5")]
    assert request.body == b""
    row = ws.audit(result.call_id)[-1]
    assert (row.decision, row.reason, row.upstream_status) == ("done", "", 200)
    assert (row.agent, row.tool, row.task_id, row.intent) == (
        "invoice-agent",
        "invoices.list",
        "t-1",
        "month end",
    )
    assert row.key_id == client.signer.credentials.key_id
    assert len(row.args_digest) == 64


def test_a_write_sends_its_body_exactly(client: BrokerClient, upstream: FakeUpstream) -> None:
    # A decimal and an integer beyond 2**64 must reach the upstream digit for digit.
    arguments = '{"id": "INV-7", "amount": 4999.99, "ref": 123456789012345678901234567890}'
    upstream.respond = lambda request: Reply(body={"paid": True})
    with pytest.raises(errors.InvalidArguments, match="ref"):
        client.call("invoices.pay", arguments)  # strict schema: no unknown arguments
    assert upstream.requests == []

    result = client.call(
        "invoices.pay", '{"id": "INV-7", "amount": 4999.990}', idempotency_key="k1"
    )

    assert result.state == "DONE"
    (request,) = upstream.requests
    assert (request.method, request.path) == ("POST", "/invoices/INV-7/pay")
    assert request.headers["content-type"] == "application/json"
    assert request.body == b'{"amount": 4999.990}'
    assert json.loads(request.body, parse_float=Decimal) == {"amount": Decimal("4999.990")}


def test_path_arguments_are_one_encoded_segment(
    client: BrokerClient, upstream: FakeUpstream
) -> None:
    client.call("invoices.get", {"id": "../admin?x=1#y"})
    assert upstream.requests[-1].path == "/invoices/..%2Fadmin%3Fx%3D1%23y"
    assert upstream.requests[-1].query == []

    with pytest.raises(errors.InvalidArguments, match="path segment"):
        client.call("invoices.get", {"id": ".."})
    assert len(upstream.requests) == 1


def test_a_tool_not_granted_is_refused_and_audited(ws: Workspace, upstream: FakeUpstream) -> None:
    reader = ws.agent("reader", grants=["invoices.list"])
    with ws.broker() as broker, broker.client(reader) as client:
        with pytest.raises(errors.ToolNotGranted) as refused:
            client.call("invoices.pay", {"id": "INV-1", "amount": 1}, idempotency_key="k2")
        assert [t.name for t in client.list_tools()] == ["invoices.list"]
    assert upstream.requests == []
    assert refused.value.status_code.name == "PERMISSION_DENIED"
    row = ws.audit(refused.value.call_id)[-1]
    assert (row.agent, row.tool, row.decision, row.reason) == (
        "reader",
        "invoices.pay",
        "refused",
        "TOOL_NOT_GRANTED",
    )


def test_a_wildcard_grant_covers_reads_only(ws: Workspace, upstream: FakeUpstream) -> None:
    reader = ws.agent("reader", grants=["invoices.*"])
    with ws.broker() as broker, broker.client(reader) as client:
        assert client.call("invoices.get", {"id": "INV-1"}).state == "DONE"
        with pytest.raises(errors.ToolNotGranted):
            client.call("invoices.pay", {"id": "INV-1", "amount": 1}, idempotency_key="k3")
        assert sorted(t.name for t in client.list_tools()) == ["invoices.get", "invoices.list"]
    assert [r.path for r in upstream.requests] == ["/invoices/INV-1"]


def test_an_unknown_tool_is_not_found(client: BrokerClient, ws: Workspace) -> None:
    with pytest.raises(errors.UnknownTool) as refused:
        client.call("payroll.run", {})
    assert refused.value.status_code.name == "NOT_FOUND"
    row = ws.audit(refused.value.call_id)[-1]
    assert row.reason == "UNKNOWN_TOOL"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"id": 7}', r"\$\.id: 7 is not of type 'string' \(rule: type\)"),
        ("{}", r"'id' is a required property"),
        ('{"id": "a", "extra": 1}', r"'extra' was unexpected"),
        ("[1]", "must be a JSON object"),
        ('{"id": "a", "id": "b"}', "duplicate key 'id'"),
        ('{"id": NaN}', "NaN is not a JSON number"),
        ("{", "not valid JSON"),
    ],
)
def test_invalid_arguments_name_the_argument_and_rule(
    client: BrokerClient, upstream: FakeUpstream, ws: Workspace, arguments: str, expected: str
) -> None:
    with pytest.raises(errors.InvalidArguments, match=expected) as refused:
        client.call("invoices.get", arguments)
    assert refused.value.status_code.name == "INVALID_ARGUMENT"
    assert upstream.requests == []
    row = ws.audit(refused.value.call_id)[-1]
    assert (row.decision, row.reason) == ("refused", "INVALID_ARGUMENTS")


def test_an_upstream_4xx_is_a_tool_error_with_its_body(
    client: BrokerClient, upstream: FakeUpstream, ws: Workspace
) -> None:
    upstream.respond = lambda request: Reply(404, {"error": "no invoice INV-9"})
    with pytest.raises(ToolError) as failed:
        client.call("invoices.get", {"id": "INV-9"})
    result = failed.value.result
    assert (result.state, result.upstream_status) == ("TOOL_ERROR", 404)
    assert result.result == {"error": "no invoice INV-9"}
    row = ws.audit(result.call_id)[-1]
    assert (row.decision, row.upstream_status) == ("tool_error", 404)


def test_an_upstream_429_is_rate_limited_with_its_delay(
    client: BrokerClient, upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(429, {"error": "slow down"}, {"Retry-After": "7"})
    with pytest.raises(errors.UpstreamRateLimited) as limited:
        client.call("invoices.list", {}, timeout=5)  # 7 s does not fit: no retry
    assert limited.value.retry_after == 7.0
    assert limited.value.status_code.name == "RESOURCE_EXHAUSTED"


def test_an_upstream_5xx_is_unavailable(client: BrokerClient, upstream: FakeUpstream) -> None:
    upstream.respond = lambda request: Reply(503, "maintenance")
    with pytest.raises(errors.UpstreamUnavailable, match="answered 503"):
        client.call("invoices.list", {})


def test_an_upstream_that_is_down_is_unavailable(ws: Workspace) -> None:
    gone = FakeUpstream()
    address = gone.url
    gone.stop()  # bound then closed: nothing listens on this port
    ws.tool(
        "ledger",
        base_url=address,
        allow_private_network=True,
        actions={"read": {"effect": "read", "method": "GET", "path": "/"}},
    )
    credentials = ws.agent("bookkeeper", grants=["ledger.read"])
    with (
        ws.broker() as broker,
        broker.client(credentials) as client,
        pytest.raises(errors.UpstreamUnavailable, match="cannot connect") as down,
    ):
        client.call("ledger.read", {})
    assert down.value.status_code.name == "UNAVAILABLE"
    row = ws.audit(down.value.call_id)[-1]
    assert (row.decision, row.reason) == ("failed", "UPSTREAM_UNAVAILABLE")


def test_a_slow_upstream_times_out_within_the_callers_deadline(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    # One try: a read that timed out is otherwise tried again in what is left of the deadline,
    # and that try leaves the broker 20 ms to record the outcome and answer (on a busy machine
    # the answer then came after the caller had given up). One try keeps 10% of the deadline
    # for the way back, at most 0.25 s: all of it at 2.5 s.
    ws.tool(
        "ledger",
        base_url=upstream.url,
        allow_private_network=True,
        retries={"max": 0},
        actions={"read": {"effect": "read", "method": "GET", "path": "/"}},
    )
    credentials = ws.agent("bookkeeper", grants=["ledger.read"])
    upstream.respond = lambda request: Reply(delay=5.0)
    with ws.broker() as broker, broker.client(credentials) as client:
        # a broker's first request waits for its audit writer process to start (up to seconds
        # on a busy machine): not what the deadline below is about
        client.list_tools()
        with pytest.raises(errors.UpstreamTimeout):
            client.call("ledger.read", {}, timeout=2.5)
    assert len(upstream.requests) == 1


def test_loopback_is_refused_unless_the_manifest_allows_it(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    port = upstream.url.rsplit(":", 1)[1]
    for name, host in (("direct", "127.0.0.1"), ("named", "localhost")):
        ws.tool(
            name,
            base_url=f"http://{host}:{port}",
            actions={"read": {"effect": "read", "method": "GET", "path": "/"}},
        )
    credentials = ws.agent("prober", grants=["direct.read", "named.read"])
    with ws.broker() as broker, broker.client(credentials) as client:
        for tool in ("direct.read", "named.read"):
            with pytest.raises(errors.UpstreamAddressRefused, match="allow_private_network"):
                client.call(tool, {})
    assert upstream.requests == []


def test_redirects_are_not_followed(client: BrokerClient, upstream: FakeUpstream) -> None:
    upstream.respond = lambda request: Reply(302, "", {"Location": "http://example.com/"})
    with pytest.raises(ToolError) as failed:
        client.call("invoices.list", {})
    assert failed.value.result.upstream_status == 302
    assert len(upstream.requests) == 1


def test_list_tools_shows_granted_actions_with_their_schemas(client: BrokerClient) -> None:
    tools = {tool.name: tool for tool in client.list_tools()}
    assert sorted(tools) == ["invoices.get", "invoices.list", "invoices.pay"]
    assert tools["invoices.pay"].write and not tools["invoices.get"].write
    schema = json.loads(tools["invoices.get"].arguments_schema_json)
    assert schema["required"] == ["id"] and schema["additionalProperties"] is False


def test_await_on_an_unknown_call_is_not_found(client: BrokerClient) -> None:
    with pytest.raises(errors.UnknownCall):
        client.await_call("c0000", wait_ms=10)


def test_the_async_client_calls_too(broker: RunningBroker, agent: AgentCredentials) -> None:
    async def run() -> tuple[str, int]:
        async with AsyncBrokerClient(
            broker.target, agent, broker_id=broker.settings.broker_id
        ) as client:
            result = await client.call("invoices.list", {})
            with pytest.raises(errors.UnknownTool):
                await client.call("payroll.run", {})
            return result.state, len(await client.list_tools())

    assert asyncio.run(run()) == ("DONE", 3)


def test_no_answer_leaves_without_its_audit_row(
    client: BrokerClient, upstream: FakeUpstream, ws: Workspace
) -> None:
    with (
        trail_locked(ws),
        pytest.raises(errors.AuditUnavailable, match="answer is withheld") as failed,
    ):
        client.call("invoices.list", {})
    assert failed.value.status_code.name == "UNAVAILABLE"
    assert ws.audit(failed.value.call_id) == []
    # once the database is free again, calls are audited and answered
    result = client.call("invoices.list", {})
    assert ws.audit(result.call_id)[-1].decision == "done"


def test_line_breaks_in_arguments_cannot_add_headers(
    client: BrokerClient, upstream: FakeUpstream
) -> None:
    client.call("invoices.get", {"id": "x\r\nX-Injected: 1"})
    client.call("invoices.list", {"supplier": "a\r\nX-Injected: 2"})
    first, second = upstream.requests
    assert first.path == "/invoices/x%0D%0AX-Injected%3A%201"
    assert second.query == [("supplier", "a\r\nX-Injected: 2")]  # encoded on the wire, intact
    assert "x-injected" not in first.headers
    assert "x-injected" not in second.headers
