"""Each page of the console in Chromium: what it shows (tainted values marked with their
origin, a lost outcome to reconcile, the audit filtered, paged and exported), accessibility
(axe-core finds nothing serious), sessions that expire, and the queue's live region.
``make screenshots`` saves each page into docs/console/ from here."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from broker import errors
from broker.client import ApprovalPending, BrokerClient
from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, RecordedRequest, Reply, Workspace, eventually
from tests.broker_process import bound_port, start_broker, wait_serving
from tests.console_helpers import (
    APPROVERS,
    OPERATORS,
    ConsoleWorld,
    screenshot,
    serious_violations,
)
from tests.test_untrusted_calls import ATTACKER, EMAIL_HTML, MAIL_ACTIONS


def _serve_mail(request: RecordedRequest) -> Reply:
    if request.path.startswith("/messages/") and request.method == "GET":
        return Reply(body={"id": "m-1", "from": "dana@partner.example", "body": EMAIL_HTML})
    if request.path.startswith("/messages/"):
        return Reply(body={"forwarded": True})
    if request.method == "POST":
        return Reply(body={"paid": True}, delay=5)  # a payment that takes its time
    return Reply(body=[])


def _lose_a_payment(ws: Workspace, agent: AgentCredentials, upstream: FakeUpstream) -> None:
    """A broker process killed (-9) while a payment was with the upstream: its outcome is lost."""
    log = ws.root / "first-broker.log"
    process = start_broker(str(ws.root / "broker.yaml"), log)
    try:
        target = f"127.0.0.1:{bound_port(process, log)}"
        with BrokerClient(target, agent, broker_id=ws.broker_id, timeout=15) as client:
            wait_serving(client)

            def pay() -> None:
                with contextlib.suppress(errors.BrokerError):  # the broker dies under it
                    client.call("invoices.pay", {"id": "INV-9", "amount": 10}, idempotency_key="k9")

            paying = threading.Thread(target=pay)
            paying.start()
            eventually(
                lambda: any(r.path.startswith("/invoices") for r in upstream.requests), seconds=20
            )
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            paying.join(20)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture
def full(ws: Workspace, upstream: FakeUpstream, browser: Browser) -> Any:
    """A console with something on every page: a forward of an address read in an email
    (tainted, waiting), a payment whose outcome was lost, and calls in the audit trail."""
    ws.tool("mail", base_url=upstream.url, allow_private_network=True, actions=MAIL_ACTIONS)
    upstream.respond = _serve_mail
    forward = {
        "tool": "mail.forward",
        "approval": "never",
        "no_approval_because": "a test",
        "budget": {"calls_per_day": 10},
    }
    pay = {"tool": "invoices.pay", "approval": "never", "no_approval_because": "a test"}
    agent = ws.agent(
        "payer",
        grants=["mail.get_message", forward, pay, "invoices.list"],
        approvers=APPROVERS,
        limits={"calls_per_day": 100},
    )
    config = {"http_listen": "127.0.0.1:0", "console": {"operators": OPERATORS}}
    ws.settings(**config)
    _lose_a_payment(ws, agent, upstream)
    with ws.broker(**config) as running:
        world = ConsoleWorld(ws, running, agent, browser)
        with world.client() as client:
            client.call("mail.get_message", {"id": "m-1"}, task_id="t1")
            with pytest.raises(ApprovalPending) as pending:
                client.call(
                    "mail.forward",
                    {"id": "m-1", "to": ATTACKER},
                    idempotency_key="fwd-1",
                    task_id="t1",
                    intent="forward the invoice as the email asks",
                    wait_for_approval=False,
                )
        yield world, pending.value.call_id


def test_every_page_is_accessible(full: Any) -> None:
    world, call_id = full
    context = world.browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(f"{world.base}/signin")
    pages: list[tuple[str, Page]] = [("signin", page)]
    assert serious_violations(page) == []
    screenshot(page, "signin")
    context.close()
    context, page = world.signed_in("alice")
    for name, path in (
        ("queue", "/"),
        ("call", f"/calls/{call_id}"),
        ("agents", "/agents"),
        ("audit", "/audit"),
        ("reconcile", "/reconcile"),
    ):
        page.goto(world.base + path)
        assert page.locator("h1").count() == 1, name
        assert serious_violations(page) == [], name
        screenshot(page, name)
        pages.append((name, page))
    assert len(pages) == 6
    context.close()


def test_tainted_values_are_marked_with_where_they_came_from(full: Any) -> None:
    world, call_id = full
    context, page = world.signed_in("alice")
    card = page.locator("section.card", has=page.locator(f"a[href='/console/calls/{call_id}']"))
    marked = card.locator("pre.arguments mark")
    assert marked.count() == 1 and json.loads(marked.inner_text()) == ATTACKER
    assert "mail.get_message" in (marked.get_attribute("title") or "")
    why = card.locator(".why").inner_text()
    assert "untrusted content" in why and ATTACKER in why and "mail.get_message" in why
    context.close()


def test_the_agents_page_shows_budgets_used_today(full: Any) -> None:
    world, _ = full
    context, page = world.signed_in("alice")
    page.get_by_role("link", name="Agents").click()
    budgets = page.locator("dt:text-is('Budgets today') + dd").inner_text()
    assert re.fullmatch(r"calls [1-9]\d* of 100; mail\.forward calls [01] of 10", budgets), budgets
    context.close()


def test_a_lost_outcome_is_reconciled_from_the_console(full: Any) -> None:
    world, _ = full
    context, page = world.signed_in("alice")
    page.get_by_role("link", name="Reconcile").click()
    card = page.locator("section.card", has=page.get_by_text("invoices.pay"))
    assert "It will not run again" in card.inner_text()
    lost = card.locator("a[href^='/console/calls/']").inner_text()
    card.get_by_label("What the tool shows happened (required)").fill("the bank paid once")
    card.get_by_role("button", name="Reconcile").click()
    page.wait_for_url(f"{world.base}/reconcile")
    assert "reconciled" in page.inner_text("main") and "No lost outcomes." in page.inner_text(
        "main"
    )
    assert world.stored(lost) == "reconciled"
    with world.client() as client, pytest.raises(errors.OutcomeUnknown, match="the bank paid once"):
        client.call("invoices.pay", {"id": "INV-9", "amount": 10}, idempotency_key="k9")
    context.close()


def test_the_audit_page_filters_pages_exports_and_verifies(full: Any) -> None:
    world, _ = full
    with world.client() as client:
        for n in range(30):
            client.call("invoices.list", {"supplier": f"S{n}"})
    context, page = world.signed_in("alice")
    page.goto(f"{world.base}/audit")
    rows = page.locator("tbody tr")
    assert rows.count() == 50  # one page
    newest = rows.first.inner_text()
    page.get_by_role("link", name="Older records").click()
    assert page.locator("tbody tr").first.inner_text() != newest
    page.goto(f"{world.base}/audit")
    page.get_by_label("Tool").fill("mail.forward")
    page.get_by_role("button", name="Filter").click()
    tools = page.locator("tbody tr td:nth-child(6)").all_inner_texts()
    assert tools and set(tools) == {"mail.forward"}
    with page.expect_download() as download:
        page.get_by_role("link", name="Export JSONL").click()
    lines = download.value.path().read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and {r["tool"] for r in records} == {"mail.forward"}
    assert len(records) == len(tools)
    page.get_by_label("From (UTC)").fill("2999-01-01T00:00")  # filters by time too
    page.get_by_role("button", name="Filter").click()
    assert page.locator("tbody tr").count() == 0
    page.get_by_role("button", name="Verify the chain now").click()
    assert "check out" in page.inner_text("main")
    assert "Newest signed checkpoint" in page.inner_text("main")
    page.goto(f"{world.base}/audit?since=yesterday")
    assert "is not a time" in page.inner_text("main")
    context.close()


def test_an_expired_session_is_sent_to_sign_in(ws: Workspace, browser: Browser) -> None:
    ws.agent("payer", grants=["invoices.list"], approvers=APPROVERS)
    console = {"operators": OPERATORS, "session_ttl": "1s"}
    with ws.broker(http_listen="127.0.0.1:0", console=console) as running:
        world = ConsoleWorld(ws, running, AgentCredentials.generate("nobody"), browser)
        context, page = world.signed_in("alice")
        time.sleep(1.5)  # the session lasts one second
        page.get_by_role("link", name="Agents").click()
        page.wait_for_url(f"{world.base}/signin?why=expired")
        assert "Your session has expired" in page.inner_text("main")
        answer = page.request.post(f"{world.base}/logout", form={"csrf": "x"})
        assert "Sign in" in answer.text()  # a post without a session decides nothing
        context.close()


def test_new_calls_are_announced_politely(console: ConsoleWorld) -> None:
    context, page = console.signed_in("alice")
    region = page.locator("#queue-status")
    assert region.get_attribute("aria-live") == "polite"
    assert "0 call(s) waiting" in region.inner_text()
    console.ask()
    # the page asks every 10 s; generous bound for a busy machine
    expect(region).to_contain_text("new calls arrived", timeout=40_000)
    assert page.title().startswith("(1)")
    context.close()
