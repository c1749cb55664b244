"""The console's pages as HTML, from data the views read: the queue, one call's story, the
agents, the audit trail and the outcomes to reconcile. Pure functions; nothing here reads
state or decides who may act (the views and actions do)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.approvals.stored_calls import why_in_words
from broker.audit.story import Story
from broker.console.markup import (
    ago,
    arguments_block,
    esc,
    facts,
    form,
    left,
    moment,
    segment,
    table,
    text_field,
    url,
)
from broker.storage.records import AuditRow, CallRecord, Freeze


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page, and what they may do there."""

    name: str
    csrf: str
    approver_of: frozenset[str]  # agents whose calls this person may decide
    admin: bool

    def may_decide(self, agent: str) -> bool:
        """True when this person is one of ``agent``'s approvers."""
        return agent in self.approver_of

    def may_operate(self, agent: str) -> bool:
        """Freeze, unfreeze, reconcile: admins for any agent, approvers for their own."""
        return self.admin or agent in self.approver_of


def _why(record: CallRecord) -> tuple[str, dict[str, str]]:
    """The why box and the risky argument paths (path -> why it is marked)."""
    why = json.loads(record.why) if record.why else {}
    items = []
    risky: dict[str, str] = {}
    for path, value, origin in why.get("tainted", []):
        risky[str(path)] = f"from untrusted content: {origin}"
        items.append(
            f"<li><code>{esc(path)}</code> holds <code>{esc(value)}</code>, which came from "
            f"untrusted content: {esc(origin)}</li>"
        )
    for path in why.get("over", []):
        risky.setdefault(str(path), f"the policy asks a human: {why.get('message', '')}")
    listed = f"<ul>{''.join(items)}</ul>" if items else ""
    box = (
        f'<div class="why"><p><strong>Why a human:</strong> {esc(_sentence(why_in_words(why)))}</p>'
        f"{listed}</div>"
    )
    return box, risky


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def decision_forms(record: CallRecord, viewer: Viewer) -> str:
    """Approve (optional comment), Deny (reason required), Freeze agent; or why not."""
    call = segment(record.call_id)
    key = record.call_id
    parts = []
    if viewer.may_decide(record.agent):
        parts.append(
            form(
                f"/console/calls/{call}/approve",
                viewer.csrf,
                text_field("comment", "Comment", f"comment-{key}"),
                "Approve",
                label=f"Approve call {key}",
            )
        )
        parts.append(
            form(
                f"/console/calls/{call}/deny",
                viewer.csrf,
                text_field("reason", "Reason", f"reason-{key}", required=True),
                "Deny",
                label=f"Deny call {key}",
            )
        )
    else:
        parts.append(
            f"<p>You are not an approver of {esc(record.agent)}: you can see this call, "
            "not decide it.</p>"
        )
    if viewer.may_operate(record.agent):
        parts.append(freeze_form(record.agent, viewer, f"freeze-{key}"))
    return f'<div class="actions">{"".join(parts)}</div>'


def freeze_form(agent: str, viewer: Viewer, field_id: str, *, unfreeze: bool = False) -> str:
    """Freeze (or unfreeze) ``agent``, with a reason."""
    verb = "unfreeze" if unfreeze else "freeze"
    return form(
        f"/console/agents/{segment(agent)}/{verb}",
        viewer.csrf,
        text_field("reason", "Reason", field_id, required=True),
        "Unfreeze agent" if unfreeze else "Freeze agent",
        label=f"{verb.capitalize()} {agent}",
    )


def queue(records: Sequence[CallRecord], viewer: Viewer) -> str:
    """Pending calls, oldest first, each whole."""
    count = len(records)
    status = (
        f'<p id="queue-status" role="status" aria-live="polite" data-count="{count}">'
        f"{count} call(s) waiting.</p>"
    )
    cards = []
    for record in records:
        box, risky = _why(record)
        details = facts(
            {
                "Agent": esc(record.agent),
                "Tool": f"<code>{esc(record.tool)}</code>",
                "Intent": esc(record.intent or "-"),
                "Task": esc(record.task_id or "-"),
                "Call": f'<a href="/console/calls/{segment(record.call_id)}">'
                f"{esc(record.call_id)}</a>",
                "Asked": f"{moment(record.created_ms)} ({ago(record.created_ms)} ago)",
                "Escalation": f"{left(record.escalate_at_ms)} ({moment(record.escalate_at_ms)})",
                "Expires": f"{left(record.expires_at_ms)} ({moment(record.expires_at_ms)})",
            }
        )
        cards.append(
            f'<section class="card" aria-labelledby="h-{esc(record.call_id)}">'
            f'<h2 id="h-{esc(record.call_id)}">{esc(record.agent)} asks to run '
            f"<code>{esc(record.tool)}</code></h2>{details}{box}"
            f"<h3>Arguments, exactly as they will run</h3>"
            f"{arguments_block(record.arguments, risky)}{decision_forms(record, viewer)}</section>"
        )
    empty = "" if cards else "<p>Nothing waits for a human.</p>"
    return f"<h1>Queue</h1>{status}{empty}{''.join(cards)}"


def call_page(story: Story, record: CallRecord | None, viewer: Viewer) -> str:
    """One call's story, as ``broker audit show`` tells it; its forms while it waits."""
    box, risky = _why(record) if record is not None else ("", {})
    shown = {
        name.capitalize(): arguments_block(value, risky) if name == "arguments" else esc(value)
        for name, value in story.facts
    }
    steps = [
        [
            moment(step.ts_ms),
            f"#{step.seq}",
            esc(step.what),
            esc(step.decision),
            esc("; ".join(step.facts)),
            f"{step.latency_ms:.1f} ms" if step.latency_ms else "",
        ]
        for step in story.steps
    ]
    waiting = ""
    if record is not None and record.state == "pending":
        waiting = f"<h2>Waiting for a decision</h2>{box}{decision_forms(record, viewer)}"
    columns = ("Time", "Record", "Step", "Decision", "Facts", "Took")
    return f"<h1>Call <code>{esc(story.call_id)}</code></h1>{facts(shown)}{waiting}" + table(
        "Steps, oldest first", columns, steps
    )


@dataclass(frozen=True)
class AgentView:
    """What the agents page shows of one agent."""

    name: str
    owner: str
    freeze: Freeze | None
    budgets: list[str] = field(default_factory=list)
    rests: list[str] = field(default_factory=list)
    last_calls: list[AuditRow] = field(default_factory=list)


def agents(views: Sequence[AgentView], viewer: Viewer) -> str:
    """Every agent: frozen or not, budgets today, rests, last calls, freeze or unfreeze."""
    cards = []
    for agent in views:
        if agent.freeze is not None:
            whom = "every agent" if agent.freeze.agent == "*" else "this agent"
            state = (
                f'<span class="frozen">Frozen</span> ({whom}) by {esc(agent.freeze.by)} '
                f"{moment(agent.freeze.ts_ms)}: {esc(agent.freeze.reason)}"
            )
        else:
            state = '<span class="fine">Running</span>'
        calls = [
            [
                moment(row.ts_ms),
                f'<a href="/console/calls/{segment(row.call_id)}">{esc(row.call_id)}</a>',
                esc(row.tool),
                esc(row.decision),
                esc(row.reason),
            ]
            for row in agent.last_calls
        ]
        action = ""
        if viewer.may_operate(agent.name):
            frozen_here = agent.freeze is not None and agent.freeze.agent == agent.name
            action = freeze_form(agent.name, viewer, f"freeze-{agent.name}", unfreeze=frozen_here)
        cards.append(
            f'<section class="card" aria-labelledby="a-{esc(agent.name)}">'
            f'<h2 id="a-{esc(agent.name)}">{esc(agent.name)}</h2>'
            + facts(
                {
                    "State": state,
                    "Owner": esc(agent.owner or "-"),
                    "Budgets today": esc("; ".join(agent.budgets) or "no budget set"),
                    "Rate-limit rests": esc("; ".join(agent.rests) or "none"),
                }
            )
            + (
                table(
                    f"Last calls of {agent.name}",
                    ("Time", "Call", "Tool", "Outcome", "Reason"),
                    calls,
                )
                if calls
                else "<p>No calls yet.</p>"
            )
            + action
            + "</section>"
        )
    return f"<h1>Agents</h1>{''.join(cards) or '<p>No agent has a policy.</p>'}"


@dataclass(frozen=True)
class AuditFilters:
    """The audit page's filters, as given in its query string."""

    agent: str = ""
    tool: str = ""
    task: str = ""
    outcome: str = ""
    since: str = ""
    until: str = ""

    def query(self, **more: object) -> dict[str, object]:
        """These filters (and ``more``) as query parameters."""
        return {**self.__dict__, **more}


def audit(
    rows: Sequence[AuditRow],
    filters: AuditFilters,
    older: int | None,
    chain: str,
    viewer: Viewer,
) -> str:
    """Filters, the newest matching records, paging, export, and the chain's status."""
    fields = "".join(
        f'<div><label for="f-{name}">{label}</label>'
        f'<input type="{kind}" id="f-{name}" name="{name}" value="{esc(getattr(filters, name))}">'
        "</div>"
        for name, label, kind in (
            ("agent", "Agent", "text"),
            ("tool", "Tool", "text"),
            ("task", "Task", "text"),
            ("outcome", "Outcome", "text"),
            ("since", "From (UTC)", "datetime-local"),
            ("until", "To (UTC)", "datetime-local"),
        )
    )
    search = (
        f'<form method="get" action="/console/audit" class="filters" aria-label="Filter records">'
        f'{fields}<button type="submit">Filter</button></form>'
    )
    lines = [
        [
            f"#{row.seq}",
            moment(row.ts_ms),
            f'<a href="/console/calls/{segment(row.call_id)}">{esc(row.call_id)}</a>'
            if row.call_id
            else "-",
            esc(row.event or row.rpc),
            esc(row.agent or "-"),
            esc(row.tool or "-"),
            esc(row.decision),
            esc(row.reason),
        ]
        for row in rows
    ]
    pager = ""
    if older is not None:
        older_page = url("/console/audit", **filters.query(before=older))
        pager = f'<a href="{esc(older_page)}">Older records</a>'
    export = f'<a href="{esc(url("/console/audit/export", **filters.query()))}">Export JSONL</a>'
    verify = form("/console/audit/verify", viewer.csrf, "", "Verify the chain now")
    return (
        f'<h1>Audit trail</h1><section class="card" aria-labelledby="chain">'
        f'<h2 id="chain">Chain status</h2><p>{chain}</p>{verify}</section>{search}'
        + table(
            "Records, newest first",
            ("Record", "Time", "Call", "Step", "Agent", "Tool", "Outcome", "Reason"),
            lines,
        )
        + f'<p class="pager">{pager} {export}</p>'
    )


def reconcile(records: Sequence[CallRecord], viewer: Viewer) -> str:
    """Writes whose outcome was lost, each with its reconcile form."""
    cards = []
    for record in records:
        act = (
            form(
                f"/console/calls/{segment(record.call_id)}/reconcile",
                viewer.csrf,
                text_field(
                    "note", "What the tool shows happened", f"note-{record.call_id}", required=True
                ),
                "Reconcile",
                label=f"Reconcile call {record.call_id}",
            )
            if viewer.may_operate(record.agent)
            else "<p>Only an admin or an approver of this agent can reconcile it.</p>"
        )
        cards.append(
            f'<section class="card" aria-labelledby="r-{esc(record.call_id)}">'
            f'<h2 id="r-{esc(record.call_id)}">{esc(record.agent)}: <code>{esc(record.tool)}'
            f"</code></h2>"
            + facts(
                {
                    "Call": f'<a href="/console/calls/{segment(record.call_id)}">'
                    f"{esc(record.call_id)}</a>",
                    "Began": f"{moment(record.updated_ms)} ({ago(record.updated_ms)} ago)",
                    "Intent": esc(record.intent or "-"),
                }
            )
            + "<p>It began before the broker stopped and its outcome was lost. It will not run "
            "again: check the tool, then record what you found.</p>"
            + arguments_block(record.arguments, {})
            + act
            + "</section>"
        )
    empty = "" if cards else "<p>No lost outcomes.</p>"
    return f"<h1>Outcomes to reconcile</h1>{empty}{''.join(cards)}"


def signin(message: str, oidc: bool, link_minutes: float) -> str:
    """The sign-in page: a one-time link from ``broker console login``, or OIDC."""
    provider = (
        '<p><a class="button" href="/console/oidc/start">Sign in with your identity provider'
        "</a></p>"
        if oidc
        else ""
    )
    note = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    return (
        f"<h1>Sign in</h1>{note}{provider}<p>On the broker's machine, an operator runs "
        "<code>broker console login --user NAME --config broker.yaml</code> and opens the "
        f"one-time link it prints (it works once, within {link_minutes:g} minutes).</p>"
    )


def problem(title: str, message: str) -> str:
    """A page that says what went wrong and what to do."""
    return f'<h1>{esc(title)}</h1><p class="error" role="alert">{esc(message)}</p>'
