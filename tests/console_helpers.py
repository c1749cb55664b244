"""For the console's browser tests (their fixtures, ``browser`` and ``console``, are in
conftest.py): a broker with the console on, people who sign in with one-time links, and an
axe-core check of each page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page

from broker.client import ApprovalPending, BrokerClient
from broker.commands.console_command import sign_in_link
from broker.commands.storage_access import with_state
from broker.signing import AgentCredentials
from broker.storage.records import AuditRow
from broker.testing import RunningBroker, Workspace

T = TypeVar("T")

# Who may sign in: alice decides the payer's calls by name, carol through her Slack id, bob
# only looks, root is an admin who approves nothing.
OPERATORS = [
    {"name": "alice"},
    {"name": "bob"},
    {"name": "carol", "approver_ids": ["U0CAROL"]},
    {"name": "root", "admin": True},
]
APPROVERS = ["alice", "U0CAROL"]
PAY = {"id": "INV-77", "amount": 4200.00}
# Where the browser tests save a screenshot of each page (make screenshots: docs/console)
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "")


def chromium_program() -> str | None:
    """Debian's chromium, which Playwright drives in place of its own download."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class ConsoleWorld:
    """A running broker with the console on, the payer agent and a browser."""

    ws: Workspace
    broker: RunningBroker
    agent: AgentCredentials
    browser: Browser

    @property
    def base(self) -> str:
        """The console's address."""
        return self.broker.http_url + "/console"

    def link(self, user: str = "alice") -> str:
        """A one-time sign-in link, as ``broker console login`` prints it."""
        made = sign_in_link(self.broker.settings, user)
        return self.broker.http_url + made[made.index("/console/") :]

    def signed_in(
        self, user: str = "alice", *, javascript: bool = True
    ) -> tuple[BrowserContext, Page]:
        """A browser context of ``user``, signed in with a fresh link, on the queue."""
        context = self.browser.new_context(java_script_enabled=javascript)
        page = context.new_page()
        page.goto(self.link(user))
        page.wait_for_url(f"{self.base}/")
        assert f"Signed in as {user}" in page.inner_text("header")
        return context, page

    def client(self) -> BrokerClient:
        """The payer agent's SDK client."""
        return self.broker.client(self.agent)

    def ask(self, arguments: dict[str, Any] | str | None = None, key: str = "pay-77") -> str:
        """The payer asks to pay; the call waits for a human. Its call id."""
        with self.client() as client, pytest.raises(ApprovalPending) as pending:
            client.call(
                "invoices.pay",
                arguments or PAY,
                idempotency_key=key,
                intent="pay the cloud bill",
                task_id="month-end",
                wait_for_approval=False,
            )
        return pending.value.call_id

    def stored(self, call_id: str) -> str:
        """The stored state of a call (read on a connection of its own, as the CLI does)."""
        record = off_loop(
            lambda: with_state(self.broker.settings, lambda state: state.calls.get(call_id))
        )
        return record.state if record is not None else "gone"

    def audit(self, call_id: str | None = None) -> list[AuditRow]:
        """The trail (or one call's part of it)."""
        return off_loop(lambda: self.ws.audit(call_id))


def off_loop(work: Callable[[], T]) -> T:
    """Run ``work`` in a thread of its own: Playwright's sync API keeps an event loop running
    in this one, and the store's readers start their own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result(60)


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page, in words."""
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def screenshot(page: Page, name: str) -> None:
    """Save the page for docs/ when asked to (``make screenshots``)."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)
