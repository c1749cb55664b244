"""The web console, driven in headless Chromium: sign in with a one-time link, see what waits
and exactly what will run, approve or deny, freeze, and the guards (CSRF, approvers, escaping,
sessions). The agent is a real SDK client over gRPC; the upstream records what reached it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from broker import errors
from broker.client import ApprovalPending, ToolError
from broker.console.tokens import ConsoleTokens
from broker.signing import now_ms
from broker.testing import FakeSlack, FakeUpstream, Reply, Workspace, eventually
from tests.console_helpers import (
    APPROVERS,
    OPERATORS,
    PAY,
    ConsoleWorld,
)

PAID = {"paid": True, "id": "INV-77"}


def _card(page: Page, call_id: str) -> Any:
    return page.locator("section.card", has=page.locator(f"a[href='/console/calls/{call_id}']"))


def _form(card: Any, action: str) -> Any:
    """One of a card's forms: Approve, Deny, Freeze or Unfreeze."""
    return card.locator(f"form[aria-label^='{action} ']")


def test_a_one_time_link_signs_in_once(console: ConsoleWorld) -> None:
    link = console.link("alice")
    first = console.browser.new_context()
    page = first.new_page()
    page.goto(link)
    page.wait_for_url(f"{console.base}/")
    assert "Signed in as alice" in page.inner_text("header")
    cookie = next(c for c in first.cookies() if c["name"] == "toolbroker_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    second = console.browser.new_context()
    again = second.new_page()
    answer = again.goto(link)
    assert answer is not None and answer.status == 403
    assert "already used" in again.inner_text("main")
    again.goto(f"{console.base}/")
    assert again.url.startswith(f"{console.base}/signin")  # no session came of it
    first.close()
    second.close()


def test_a_link_for_someone_who_is_not_an_operator_cannot_be_made(
    console: ConsoleWorld,
) -> None:
    with pytest.raises(errors.ConfigError, match="not an operator"):
        console.link("mallory")
    forged = console.link("alice").replace("token=", "token=x")
    context = console.browser.new_context()
    page = context.new_page()
    answer = page.goto(forged)
    assert answer is not None and answer.status == 403
    assert "not a sign-in link this broker made" in page.inner_text("main")
    context.close()


def test_approve_shows_the_exact_call_and_the_waiting_agent_finishes(
    console: ConsoleWorld, upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(body=PAID)
    call_id = console.ask('{"id": "INV-77", "amount": 4200.00}')  # as the agent wrote it
    context, page = console.signed_in("alice")
    assert page.title().startswith("(1) Queue")
    card = _card(page, call_id)
    text = card.inner_text()
    for shown in ("payer", "invoices.pay", "pay the cloud bill", "month-end", "It is a write"):
        assert shown in text
    assert '"amount": 4200.00' in card.locator("pre.arguments").inner_text()
    with ThreadPoolExecutor(1) as pool, console.client() as waiting:
        result = pool.submit(waiting.await_call, call_id, 60_000)
        card.get_by_label("Comment (optional)").fill("checked against the PO")
        card.get_by_role("button", name="Approve").click()
        page.wait_for_url(f"{console.base}/")
        assert "approved; it runs now" in page.inner_text("main")
        assert json.loads(result.result(60).result_json) == PAID
    assert len(upstream.requests) == 1 and upstream.requests[0].body == b'{"amount": 4200.00}'
    approved = [r for r in console.audit(call_id) if r.event == "approved"]
    assert len(approved) == 1
    assert json.loads(approved[0].detail) == {
        "note": "checked against the PO",
        "by": "console:alice",
    }
    context.close()


def test_deny_needs_a_reason_and_the_agent_is_told_it(
    console: ConsoleWorld, upstream: FakeUpstream
) -> None:
    call_id = console.ask()
    context, page = console.signed_in("carol")  # an approver through her Slack id
    card = _card(page, call_id)
    card.get_by_role("button", name="Deny").click()  # the browser asks for the reason first
    assert console.stored(call_id) == "pending"
    # without the browser's check, the broker refuses an empty reason itself
    answer = page.request.post(
        f"{console.base}/calls/{call_id}/deny",
        form={"csrf": card.locator("input[name=csrf]").first.input_value(), "reason": " "},
    )
    assert answer.status == 400 and console.stored(call_id) == "pending"
    _form(card, "Deny").get_by_label("Reason (required)").fill("wrong supplier")
    card.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{console.base}/")
    assert "denied" in page.inner_text("main")
    with console.client() as client, pytest.raises(errors.ApprovalDenied, match="wrong supplier"):
        client.await_call(call_id, 10_000)
    assert upstream.requests == []
    context.close()


def test_two_pages_approving_at_once_run_the_call_once(
    console: ConsoleWorld, upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(body=PAID)
    call_id = console.ask()
    context, first = console.signed_in("alice")
    second = context.new_page()
    second.goto(f"{console.base}/")
    # Playwright's sync pages belong to this thread: the two clicks go out back to back,
    # the second before the first page's answer is read
    button_one = _card(first, call_id).get_by_role("button", name="Approve")
    button_two = _card(second, call_id).get_by_role("button", name="Approve")
    button_one.click(no_wait_after=True)
    button_two.click(no_wait_after=True)
    first.wait_for_load_state()
    second.wait_for_load_state()
    eventually(lambda: console.stored(call_id) == "done", seconds=20)
    texts = first.inner_text("main") + second.inner_text("main")
    assert "approved; it runs now" in texts
    assert "Nothing changed" in texts and "already" in texts
    assert len(upstream.requests) == 1
    assert [r.event for r in console.audit(call_id)].count("approved") == 1
    context.close()


def test_freeze_from_the_console_refuses_the_agents_next_call(
    console: ConsoleWorld, upstream: FakeUpstream
) -> None:
    call_id = console.ask()
    context, page = console.signed_in("alice")
    page.get_by_role("link", name="Agents").click()
    card = page.locator("section.card", has=page.get_by_role("heading", name="payer"))
    assert "Running" in card.inner_text()
    _form(card, "Freeze").get_by_label("Reason (required)").fill("it loops on INV-77")
    card.get_by_role("button", name="Freeze agent").click()
    page.wait_for_url(f"{console.base}/agents")
    card = page.locator("section.card", has=page.get_by_role("heading", name="payer"))
    assert "Frozen" in card.inner_text() and "it loops on INV-77" in card.inner_text()
    assert "console:alice" in card.inner_text()
    with console.client() as client, pytest.raises(errors.AgentFrozen):
        client.call("invoices.list", {})
    assert console.stored(call_id) == "cancelled"  # what waited is cancelled with it
    _form(card, "Unfreeze").get_by_label("Reason (required)").fill("fixed the loop")
    card.get_by_role("button", name="Unfreeze agent").click()
    page.wait_for_url(f"{console.base}/agents")
    upstream.respond = lambda request: Reply(body=[])
    with console.client() as client:
        assert client.call("invoices.list", {}).result_json == "[]"
    events = [(r.event, r.agent) for r in console.audit() if r.event in ("frozen", "unfrozen")]
    assert events == [("frozen", "payer"), ("unfrozen", "payer")]
    context.close()


def test_agent_supplied_markup_renders_as_text(console: ConsoleWorld) -> None:
    hostile = [
        '<script>window.__owned = 1</script><img src=x onerror="window.__owned = 2">',
        "javascript:window.__owned = 3",
    ]
    calls = [
        console.ask({"id": value, "amount": 1}, key=f"hostile-{n}")
        for n, value in enumerate(hostile)
    ]
    context, page = console.signed_in("alice")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.reload()
    for call_id, value in zip(calls, hostile, strict=True):
        shown = _card(page, call_id).locator("pre.arguments").inner_text()
        assert json.loads(shown) == {"id": value, "amount": 1}  # exactly what will run, as text
    assert page.evaluate("window.__owned") is None and dialogs == []
    assert page.locator("main script, main img").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    page.goto(f"{console.base}/calls/{calls[0]}")
    assert page.evaluate("window.__owned") is None
    assert "<script>" in page.inner_text("main")
    context.close()


def test_a_form_without_its_csrf_token_is_refused(console: ConsoleWorld) -> None:
    call_id = console.ask()
    context, page = console.signed_in("alice")
    for form in ({}, {"csrf": "not-the-token"}):
        answer = page.request.post(f"{console.base}/calls/{call_id}/approve", form=form)
        assert answer.status == 403
        assert "security token" in answer.text()
    other_context, other = console.signed_in("carol")
    their_token = other.locator("input[name=csrf]").first.input_value()
    answer = page.request.post(
        f"{console.base}/calls/{call_id}/approve", form={"csrf": their_token}
    )
    assert answer.status == 403  # another session's token does not do either
    assert console.stored(call_id) == "pending"
    context.close()
    other_context.close()


def test_someone_who_is_not_an_approver_cannot_decide(console: ConsoleWorld) -> None:
    call_id = console.ask()
    for user in ("bob", "root"):  # root is an admin, yet not among the payer's approvers
        context, page = console.signed_in(user)
        card = _card(page, call_id)
        assert "You are not an approver of payer" in card.inner_text()
        assert card.get_by_role("button", name="Approve").count() == 0
        token = page.locator("input[name=csrf]").first.input_value()
        answer = page.request.post(
            f"{console.base}/calls/{call_id}/approve", form={"csrf": token, "comment": "mine"}
        )
        assert answer.status == 403 and "not an approver" in answer.text()
        context.close()
    assert console.stored(call_id) == "pending"


def test_the_console_works_with_javascript_off(
    console: ConsoleWorld, upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(body=PAID)
    call_id = console.ask()
    context, page = console.signed_in("alice", javascript=False)
    _card(page, call_id).get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{console.base}/")
    eventually(lambda: console.stored(call_id) == "done", seconds=20)
    for link in ("Agents", "Audit", "Reconcile"):
        page.get_by_role("link", name=link).click()
        assert page.locator("h1").count() == 1
    context.close()


def test_security_headers_forbid_inline_script(console: ConsoleWorld) -> None:
    context, page = console.signed_in("alice")
    answer = page.goto(f"{console.base}/agents")
    assert answer is not None
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert answer.headers["x-frame-options"] == "DENY"
    blocked = page.evaluate(
        """() => { const s = document.createElement('script');
                   s.textContent = 'window.__inline = 1'; document.body.appendChild(s);
                   return window.__inline === undefined; }"""
    )
    assert blocked
    context.close()


def test_a_tool_error_is_not_an_approval(console: ConsoleWorld, upstream: FakeUpstream) -> None:
    upstream.respond = lambda request: Reply(status=422, body={"error": "invoice closed"})
    call_id = console.ask()
    context, page = console.signed_in("alice")
    _card(page, call_id).get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{console.base}/")
    with console.client() as client, pytest.raises(ToolError):
        client.await_call(call_id, 30_000)
    page.goto(f"{console.base}/calls/{call_id}")
    steps = page.locator("table").inner_text()
    assert "approved" in steps and "by console:alice" in steps and "upstream 422" in steps
    assert PAY["id"] in page.inner_text("main")
    context.close()


def test_a_console_click_racing_a_slack_click_runs_the_call_once(
    ws: Workspace, browser: Browser, upstream: FakeUpstream
) -> None:
    master = base64.b64encode(b"m" * 32).decode()
    upstream.respond = lambda request: Reply(body=PAID)
    with FakeSlack() as slack:
        settings = {
            "http_listen": "127.0.0.1:0",
            "slack": {"api_url": slack.api_url, "channel": "C-APPROVALS"},
            "console": {"operators": OPERATORS},
        }
        ws.settings(**settings)
        config = str(ws.root / "broker.yaml")
        for name, value in (
            ("slack-bot-token", "xoxb-fake"),
            ("slack-signing-secret", slack.signing_secret),
        ):
            stored = subprocess.run(
                [sys.executable, "-m", "broker", "secrets", "set", name, "--config", config],
                input=value,
                text=True,
                env={**os.environ, "BROKER_MASTER_KEY": master},
                capture_output=True,
                check=False,
            )
            assert stored.returncode == 0, stored.stderr
        agent = ws.agent("payer", grants=["invoices.pay"], approvers=APPROVERS)
        with ws.broker(env={"BROKER_MASTER_KEY": master}, **settings) as running:
            world = ConsoleWorld(ws, running, agent, browser)
            call_id = world.ask()
            context, page = world.signed_in("alice")  # the page shows the call, undecided
            clicked = slack.click(
                f"{running.http_url}/slack/interactions", call_id, "approve", "U0CAROL"
            )
            assert clicked == 200
            _card(page, call_id).get_by_role("button", name="Approve").click()
            page.wait_for_url(f"{world.base}/")
            assert "Nothing changed" in page.inner_text("main")
            assert "by slack:U0CAROL" in page.inner_text("main")
            eventually(lambda: world.stored(call_id) == "done", seconds=20)
            assert len(upstream.requests) == 1
            approved = [r for r in world.audit(call_id) if r.event == "approved"]
            assert [json.loads(r.detail)["by"] for r in approved] == ["slack:U0CAROL"]
            context.close()


def test_signing_out_ends_the_session(console: ConsoleWorld) -> None:
    context, page = console.signed_in("alice")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{console.base}/signin?why=signed_out")
    assert "You are signed out" in page.inner_text("main")
    page.goto(f"{console.base}/agents")
    assert page.url.startswith(f"{console.base}/signin")
    context.close()


def test_a_value_over_a_policy_condition_is_marked(ws: Workspace, browser: Browser) -> None:
    pay = {
        "tool": "invoices.pay",
        "approval": {"when": {"amount": {"above": "1000.00"}}},
        "no_approval_because": "small payments are routine",
    }
    agent = ws.agent("spender", grants=[pay], approvers=APPROVERS)
    with ws.broker(http_listen="127.0.0.1:0", console={"operators": OPERATORS}) as running:
        world = ConsoleWorld(ws, running, agent, browser)
        with world.client() as client, pytest.raises(ApprovalPending) as asked:
            client.call(
                "invoices.pay",
                '{"id": "INV-8", "amount": 4200.00}',
                idempotency_key="pay-8",
                wait_for_approval=False,
            )
        context, page = world.signed_in("alice")
        card = _card(page, asked.value.call_id)
        marked = card.locator("pre.arguments mark")
        assert marked.count() == 1 and marked.inner_text() == "4200.00"
        assert "above" in (marked.get_attribute("title") or "")
        assert "Condition holds: amount above 1000.00" in card.locator(".why").inner_text()
        context.close()


def test_the_agents_page_shows_a_tool_resting_after_a_429(
    console: ConsoleWorld, upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(429, {"error": "slow down"}, {"Retry-After": "300"})
    with console.client() as client, pytest.raises(errors.UpstreamRateLimited):
        client.call("invoices.list", {})
    context, page = console.signed_in("bob")  # anyone signed in may look
    page.get_by_role("link", name="Agents").click()
    card = page.locator("section.card", has=page.get_by_role("heading", name="payer"))
    assert "invoices rests 4m more (the upstream asked)" in card.inner_text()
    assert "UPSTREAM_RATE_LIMITED" in card.locator("table").inner_text()
    assert card.get_by_role("button", name="Freeze agent").count() == 0  # bob only looks
    context.close()


def test_an_expired_link_is_refused(console: ConsoleWorld) -> None:
    tokens = ConsoleTokens.of(console.broker.settings)
    stale = tokens.issue("link", "alice", -1, now_ms())  # expired a moment ago
    context = console.browser.new_context()
    page = context.new_page()
    answer = page.goto(f"{console.base}/login?token={stale}")
    assert answer is not None and answer.status == 403
    assert "This sign-in link has expired" in page.inner_text("main")
    page.goto(f"{console.base}/")
    assert page.url.startswith(f"{console.base}/signin")
    context.close()


def test_the_console_is_off_unless_configured_and_on_loopback_by_default(
    ws: Workspace,
) -> None:
    ws.agent("payer", grants=["invoices.list"], approvers=APPROVERS)
    with ws.broker(http_listen="127.0.0.1:0") as running:
        assert httpx.get(f"{running.http_url}/console/", timeout=10).status_code == 404
    with pytest.raises(errors.ConfigError, match="public_url with https"):
        ws.settings(http_listen="0.0.0.0:0", console={"operators": OPERATORS})
    ws.settings(
        http_listen="0.0.0.0:0",
        console={"operators": OPERATORS, "public_url": "https://broker.example.com"},
    )
    with pytest.raises(errors.ConfigError, match="console needs http_listen"):
        ws.settings(console={"operators": OPERATORS})
