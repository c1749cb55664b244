"""The MCP front driven by the ``mcp`` SDK's own client, over stdio and over streamable HTTP,
against a real broker and a real upstream that records what reached it: the same policy,
approvals, limits, taint and audit as a signed gRPC call."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from broker.cli import main
from broker.signing import AgentCredentials
from broker.testing import (
    FakeUpstream,
    RecordedRequest,
    Reply,
    RunningBroker,
    Workspace,
)
from tests.mcp_helpers import (
    front_args,
    http_client,
    http_front,
    serving_with_token,
    stdio_client,
)
from tests.test_untrusted_calls import ATTACKER, EMAIL_HTML, MAIL_ACTIONS

TOKEN = "mcp-test-token-" + "q" * 32
INVOICES = {"invoices": [{"id": "INV-1", "supplier": "ACME", "amount": 120}]}
SCENARIO_BOUND_S = 90  # no scenario may hang: a front that stops answering fails the test

ClientFactory = Callable[..., Client]


@pytest.fixture
def desk(ws: Workspace, upstream: FakeUpstream) -> AgentCredentials:
    """An agent granted reads, a write that needs a human, and a write that does not."""
    ws.tool("mail", base_url=upstream.url, allow_private_network=True, actions=MAIL_ACTIONS)

    def serve(request: RecordedRequest) -> Reply:
        if request.path.startswith("/messages/") and request.method == "GET":
            return Reply(body={"id": "m-1", "from": "dana@partner.example", "body": EMAIL_HTML})
        if request.path.endswith("/forward"):
            return Reply(body={"forwarded": True})
        if request.method == "POST":
            return Reply(body={"paid": True})
        return Reply(body=INVOICES)

    upstream.respond = serve
    return ws.agent(
        "desk",
        grants=[
            "invoices.list",
            "invoices.pay",
            "mail.get_message",
            {"tool": "mail.forward", "approval": "never", "no_approval_because": "a test"},
        ],
    )


@pytest.fixture
def running(ws: Workspace, desk: AgentCredentials) -> Iterator[RunningBroker]:
    with serving_with_token(ws, "desk", TOKEN) as broker:
        yield broker


@pytest.fixture(params=["stdio", "http"])
def front(
    request: pytest.FixtureRequest, ws: Workspace, desk: AgentCredentials, running: RunningBroker
) -> Callable[..., Any]:
    """``front(*args)``: a context giving MCP clients of ``broker mcp *args`` for ``desk``,
    over the transport of the test's parameter."""

    @contextmanager
    def started(*extra: str) -> Iterator[ClientFactory]:
        if request.param == "stdio":
            yield lambda **kw: stdio_client(ws, desk, *extra, **kw)
        else:
            with http_front(ws, [desk], *extra) as (url, _):
                yield lambda **kw: http_client(url, TOKEN, **kw)

    return started


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(SCENARIO_BOUND_S):
            await scenario()

    anyio.run(bounded)


def posts(upstream: FakeUpstream) -> list[RecordedRequest]:
    return [r for r in upstream.requests if r.method == "POST"]


def test_the_list_is_what_the_agent_is_granted_with_its_annotations(
    front: Callable[..., Any], ws: Workspace
) -> None:
    async def scenario() -> None:
        async with connect() as client:
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(listed) == {
            "invoices.list",
            "invoices.pay",
            "mail.get_message",
            "mail.forward",
            "broker_approval_status",
        }  # invoices.get exists, but is not granted
        read, pay = listed["invoices.list"], listed["invoices.pay"]
        assert read.annotations is not None and pay.annotations is not None
        assert read.annotations.read_only_hint is True
        assert read.annotations.open_world_hint is True  # an HTTP tool
        assert pay.annotations.read_only_hint is False
        assert pay.annotations.destructive_hint is True  # the manifest says nothing: the worst
        assert pay.annotations.idempotent_hint is False
        assert pay.input_schema["required"] == ["id", "amount"]  # the manifest's schema, as is
        assert listed["broker_approval_status"].annotations.read_only_hint is True  # type: ignore[union-attr]

    with front() as connect:
        run(scenario)


def test_a_read_returns_the_tool_json_and_outside_content_its_provenance(
    front: Callable[..., Any], upstream: FakeUpstream
) -> None:
    async def scenario() -> None:
        async with connect() as client:
            listed = await client.call_tool("invoices.list", {"supplier": "ACME"})
            mail = await client.call_tool("mail.get_message", {"id": "m-1"})
        assert listed.is_error is False
        assert listed.structured_content == INVOICES
        assert json.loads(_texts(listed)[-1]) == INVOICES
        assert mail.is_error is False
        structured = mail.structured_content
        assert structured is not None
        assert "$.body" in structured["untrusted_paths"]
        assert {"kind": "hidden_text", "path": "$.body"}.items() <= structured["findings"][
            0
        ].items()
        assert ATTACKER not in structured["body"]  # cleaned, as for a gRPC call
        assert "UNTRUSTED CONTENT" in _texts(mail)[0]  # a marker before the data

    with front() as connect:
        run(scenario)
    assert [r.path for r in upstream.requests] == ["/invoices", "/messages/m-1"]


def test_refusals_are_tool_errors_and_unknown_tools_protocol_errors(
    front: Callable[..., Any], upstream: FakeUpstream, running: RunningBroker
) -> None:
    async def scenario() -> None:
        async with connect() as client:
            denied = await client.call_tool("invoices.get", {"id": "INV-1"})
            bad = await client.call_tool("invoices.list", {"limit": "ten"})
            with pytest.raises(MCPError) as unknown:
                await client.call_tool("invoices.burn", {})
        assert denied.is_error is True
        assert denied.structured_content is not None
        assert denied.structured_content["reason"] == "TOOL_NOT_GRANTED"
        assert denied.structured_content["call_id"]
        assert "TOOL_NOT_GRANTED" in _texts(denied)[0]
        assert bad.is_error is True
        assert bad.structured_content is not None
        assert bad.structured_content["reason"] == "INVALID_ARGUMENTS"
        assert unknown.value.code == types.INVALID_PARAMS
        assert "invoices.burn" in unknown.value.message

    with front() as connect:
        run(scenario)
    assert upstream.requests == []


def test_an_upstream_429_is_an_error_with_its_retry_after(
    front: Callable[..., Any], upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(status=429, headers={"Retry-After": "7"})

    async def scenario() -> None:
        async with connect() as client:
            limited = await client.call_tool("invoices.list", {})
        assert limited.is_error is True
        assert limited.structured_content is not None
        assert limited.structured_content["reason"] == "UPSTREAM_RATE_LIMITED"
        assert limited.structured_content["retry_after_s"] == 7
        assert "Retry after 7 s" in _texts(limited)[0]

    with front() as connect:
        run(scenario)


def test_a_write_waits_inline_for_the_human_who_approves_with_the_cli(
    front: Callable[..., Any], upstream: FakeUpstream, running: RunningBroker, ws: Workspace
) -> None:
    progress: list[tuple[float, str | None]] = []

    async def note(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async def scenario() -> None:
        async with connect() as client, anyio.create_task_group() as group:
            answers: list[types.CallToolResult] = []

            async def pay() -> None:
                answers.append(
                    await client.call_tool(
                        "invoices.pay", {"id": "INV-1", "amount": 120}, progress_callback=note
                    )
                )

            group.start_soon(pay)
            call_id = await _pending_call(running)
            config = ["--config", str(ws.root / "broker.yaml")]
            approved = await anyio.to_thread.run_sync(
                main, ["approve", call_id, "--reason", "ok by finance", *config]
            )
            assert approved == 0
        (paid,) = answers
        assert paid.is_error is False
        assert paid.structured_content == {"paid": True}
        assert progress and "approval" in (progress[0][1] or "")

    with front("--approval-wait", "60") as connect:
        run(scenario)
    assert len(posts(upstream)) == 1


def test_past_the_bound_the_write_is_pending_and_the_status_tool_gives_its_outcome(
    front: Callable[..., Any], upstream: FakeUpstream, running: RunningBroker
) -> None:
    arguments = {"id": "INV-1", "amount": 120}

    async def scenario() -> None:
        async with connect() as client:
            first = await client.call_tool("invoices.pay", arguments)
            again = await client.call_tool("invoices.pay", arguments)  # the model repeats it
            for waiting in (first, again):
                assert waiting.is_error is False  # neither an error nor a success
                assert waiting.structured_content is not None
                assert waiting.structured_content["status"] == "pending_approval"
                assert waiting.structured_content["expires_at"].endswith("Z")
                assert "broker approve" in waiting.structured_content["approval_note"]
            call_id = first.structured_content["call_id"]  # type: ignore[index]
            assert again.structured_content["call_id"] == call_id  # type: ignore[index]
            with running.admin() as admin:
                assert [c.call_id for c in admin.list_approvals()] == [call_id]  # one question
                admin.decide(call_id, approve=True, reason="ok")
            outcome = await client.call_tool("broker_approval_status", {"call_id": call_id})
            repeated = await client.call_tool("invoices.pay", arguments)
        assert outcome.is_error is False
        assert outcome.structured_content == {"paid": True}
        assert repeated.structured_content == {"paid": True}  # the stored answer

    with front("--approval-wait", "0.5") as connect:
        run(scenario)
    assert len(posts(upstream)) == 1


def test_a_repeated_write_runs_once(front: Callable[..., Any], upstream: FakeUpstream) -> None:
    forward = {"id": "m-1", "to": "ana@corp.example"}

    async def scenario() -> None:
        async with connect() as client:
            first = await client.call_tool("mail.forward", forward)
        async with connect() as client:  # a client that reconnected and retries
            second = await client.call_tool("mail.forward", forward)
        assert first.structured_content == second.structured_content == {"forwarded": True}

    with front() as connect:  # over stdio, each client starts a front of its own
        run(scenario)
    assert len(posts(upstream)) == 1


def test_a_write_built_from_outside_content_needs_a_human_even_under_approval_never(
    front: Callable[..., Any], upstream: FakeUpstream, running: RunningBroker
) -> None:
    async def scenario() -> None:
        async with connect() as client:
            await client.call_tool("mail.get_message", {"id": "m-1"})
            obeyed = await client.call_tool("mail.forward", {"id": "m-1", "to": ATTACKER})
        assert obeyed.is_error is False
        assert obeyed.structured_content is not None
        assert obeyed.structured_content["status"] == "pending_approval"
        with running.admin() as admin:
            (asked,) = admin.list_approvals()
        assert json.loads(asked.why)["reason"] == "tainted"

    with front("--approval-wait", "0.5") as connect:
        run(scenario)
    assert posts(upstream) == []


def test_a_frozen_agent_and_a_broker_that_is_down_are_clear_errors(
    front: Callable[..., Any], upstream: FakeUpstream, running: RunningBroker
) -> None:
    async def scenario() -> None:
        async with connect() as client:
            with running.admin() as admin:
                admin.freeze("desk", reason="incident 7")
            frozen = await client.call_tool("invoices.list", {})
            running.stop()
            down = await client.call_tool("invoices.list", {})
        async with connect() as fresh:  # a client that starts while the broker is down
            write = await fresh.call_tool("mail.forward", {"id": "m-1", "to": "a@corp.example"})
        assert write.is_error is True
        assert write.structured_content["reason"] == "BROKER_UNAVAILABLE"  # type: ignore[index]
        assert frozen.is_error is True
        assert frozen.structured_content["reason"] == "AGENT_FROZEN"  # type: ignore[index]
        assert down.is_error is True
        assert down.structured_content["reason"] == "BROKER_UNAVAILABLE"  # type: ignore[index]
        assert "did not answer" in _texts(down)[0]

    with front() as connect:
        run(scenario)
    assert upstream.requests == []


def test_the_audit_of_an_mcp_call_differs_from_a_grpc_call_only_by_its_front(
    front: Callable[..., Any], running: RunningBroker, desk: AgentCredentials, ws: Workspace
) -> None:
    meta = {"toolbroker/task_id": "same-task", "toolbroker/intent": "monthly close"}

    async def scenario() -> None:
        async with connect() as client:
            result = await client.call_tool("invoices.list", {"supplier": "ACME"}, meta=meta)
        calls.append(result.meta["toolbroker/call_id"])  # type: ignore[index]

    calls: list[str] = []
    with front() as connect:
        run(scenario)
    with running.client(desk) as sdk:
        calls.append(
            sdk.call(
                "invoices.list", {"supplier": "ACME"}, task_id="same-task", intent="monthly close"
            ).call_id
        )
    volatile = {"ts_ms", "call_id", "nonce", "latency_us", "seq", "prev_hash", "hash"}
    mcp_rows, grpc_rows = ([_stable(r, volatile) for r in ws.audit(c)] for c in calls)
    assert [row["event"] for row in mcp_rows] == [row["event"] for row in grpc_rows]
    for mcp_row, grpc_row in zip(mcp_rows, grpc_rows, strict=True):
        detail = json.loads(mcp_row.pop("detail"))
        assert detail.pop("front") == "mcp"
        assert detail == json.loads(grpc_row.pop("detail"))
        assert mcp_row == grpc_row


@pytest.mark.parametrize("protocol", ["legacy", "2026-07-28"])
def test_a_policy_change_shows_in_the_list_and_is_announced(
    protocol: str, ws: Workspace, desk: AgentCredentials, running: RunningBroker
) -> None:
    """Handshake-era clients hear of it on their connection, 2026 ones on their listen
    stream."""
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async def listen(client: Client, ready: anyio.Event) -> None:
        async with client.listen(tools_list_changed=True) as events:
            ready.set()
            async for _event in events:
                changed.set()
                return

    async def scenario() -> None:
        extra = {"message_handler": on_message} if protocol == "legacy" else {}
        client = stdio_client(ws, desk, "--tools-poll", "0.2", mode=protocol, **extra)
        async with client, anyio.create_task_group() as group:
            before = {tool.name for tool in (await client.list_tools()).tools}
            if protocol != "legacy":
                ready = anyio.Event()
                group.start_soon(listen, client, ready)
                await ready.wait()
            ws.agent(
                "desk",
                grants=["invoices.list"],
                keys=[{"id": desk.key_id, "ed25519": desk.public_key_b64}],
            )
            assert await anyio.to_thread.run_sync(running.reload)
            with anyio.fail_after(30):
                await changed.wait()
            after = {tool.name for tool in (await client.list_tools()).tools}
            group.cancel_scope.cancel()
        assert "invoices.pay" in before
        assert after == {"invoices.list"}  # no write left: no status tool either

    run(scenario)


def test_names_without_dots_for_clients_that_refuse_them(
    ws: Workspace, desk: AgentCredentials, running: RunningBroker, upstream: FakeUpstream
) -> None:
    async def scenario() -> None:
        async with stdio_client(ws, desk, "--tool-names", "underscore") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            listed = await client.call_tool("invoices__list", {})
        assert "invoices__list" in names and "mail__get_message" in names
        assert listed.structured_content == INVOICES

    run(scenario)
    assert [r.path for r in upstream.requests] == ["/invoices"]


def _texts(result: types.CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, types.TextContent)]


def _stable(row: Any, volatile: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row._asdict().items() if k not in volatile}


async def _pending_call(broker: RunningBroker) -> str:
    """The call_id of the one call waiting for a human, once it waits."""
    with anyio.fail_after(30):
        while True:
            with broker.admin() as admin:
                waiting = await anyio.to_thread.run_sync(admin.list_approvals)
            if waiting:
                return str(waiting[0].call_id)
            await anyio.sleep(0.1)  # the call is on its way; bounded by fail_after


def test_stdin_from_a_file_is_served_too(
    ws: Workspace, desk: AgentCredentials, running: RunningBroker
) -> None:
    """Not a pipe (a file, a terminal): the SDK's own stdin and stdout serve, and stdout
    carries nothing but the protocol."""
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "a file", "version": "1"},
        },
    }
    request = ws.root / "request.jsonl"
    request.write_text(json.dumps(hello) + "\n")
    with request.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, *front_args(ws, desk)],
            stdin=stdin,
            capture_output=True,
            timeout=120,
            check=True,
        )
    (answer,) = [json.loads(line) for line in done.stdout.decode().splitlines()][:1]
    assert answer["id"] == 1
    assert answer["result"]["serverInfo"]["name"] == "toolbroker"
    assert b"MCP front for agent desk" in done.stderr
