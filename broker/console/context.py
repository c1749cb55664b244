"""What the console's views and actions share: the broker's parts they read and act through,
and who the signed-in person is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from broker.approvals.service import Approvals
from broker.console.pages import Viewer
from broker.console.tokens import ConsoleTokens
from broker.identity import ReplayGuard
from broker.limits.rates import Limiters
from broker.settings import BrokerSettings, ConsoleOperator, ConsoleSettings
from broker.storage.interfaces import AuditReader, BudgetStore
from broker.storage.records import AuditRow

# what the guard found out about a request, for the handlers after it
VIEWER = web.RequestKey("viewer", Viewer)
NOTICE = web.RequestKey("notice", str)
FORM = web.RequestKey("form", dict[str, str])

SESSION_COOKIE = "toolbroker_console"
NOTICE_COOKIE = "toolbroker_notice"  # what the last action did, shown once
FLOW_COOKIE = "toolbroker_oidc"  # an OIDC sign-in under way (its state, nonce and verifier)


@dataclass
class ConsoleParts:
    """The broker's parts the console uses; it holds no state of its own that a restart
    would need (sessions are signed cookies, used links are in the audit trail)."""

    settings: BrokerSettings
    approvals: Approvals
    audit: AuditReader
    budgets: BudgetStore
    limiters: Limiters
    tokens: ConsoleTokens
    links: ReplayGuard  # one-time links claimed, by this process and (replicas) by all
    record: Callable[[AuditRow, str], Awaitable[None]]  # into the audit trail, durably

    @property
    def console(self) -> ConsoleSettings:
        """The console's own settings."""
        assert self.settings.console is not None
        return self.settings.console

    @property
    def base_url(self) -> str:
        """Where people open the console (no trailing slash)."""
        return self.settings.console_url

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over https when the console is served over https."""
        return self.base_url.startswith("https://")

    def operator(self, name: str) -> ConsoleOperator | None:
        """The configured operator of that name (removing one from the config locks them
        out at their next request)."""
        return next((o for o in self.console.operators if o.name == name), None)

    def viewer(self, operator: ConsoleOperator, csrf: str) -> Viewer:
        """The operator as the pages see them: which agents' calls they may decide."""
        ids = {operator.name, *operator.approver_ids}
        policies = self.approvals.snapshot().policies.policies
        mine = frozenset(agent for agent, p in policies.items() if ids & set(p.approvers))
        return Viewer(operator.name, csrf, mine, operator.admin)


def person(operator_name: str) -> str:
    """How a console user is named in the audit trail and in decisions."""
    return f"console:{operator_name}"
