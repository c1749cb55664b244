"""The console's pages, read from the broker's state and audit trail: queue, call, agents,
audit (with its JSONL export and the chain check), outcomes to reconcile."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.approvals.stored_calls import PENDING, UNKNOWN
from broker.audit.checkpoints import audit_key
from broker.audit.story import call_story, record_json
from broker.audit.verification import verify
from broker.console import pages
from broker.console.context import NOTICE, VIEWER, ConsoleParts
from broker.console.markup import esc, moment, span
from broker.console.replies import html, refused
from broker.limits.budgets import today
from broker.policy.model import Limits, Policy, ToolBudget
from broker.storage.records import STEP_EVENTS, AuditQuery, AuditRow

PAGE_SIZE = 50
LAST_CALLS = 5
EXPORT_BATCH = 1000
_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?)?")


class Views:
    """GET handlers; each finds its viewer in ``request[VIEWER]`` (set by the app's guard)."""

    def __init__(self, parts: ConsoleParts) -> None:
        self._parts = parts
        self._public_key: Ed25519PublicKey = audit_key(parts.settings).private_key.public_key()
        self._last_check = "not verified from this console yet"

    async def queue(self, request: web.Request) -> web.Response:
        """Pending calls, oldest first; the count in the title."""
        records = await self._parts.approvals.calls.in_states((PENDING,))
        records.sort(key=lambda r: (r.created_ms, r.call_id))
        notice = request[NOTICE]
        return html(
            pages.queue(records, request[VIEWER]),
            f"({len(records)}) Queue",
            viewer=request[VIEWER],
            current="queue",
            notice=notice,
        )

    async def queue_count(self, request: web.Request) -> web.Response:
        """How many calls wait (for the queue's live region)."""
        return web.json_response({"pending": await self._parts.approvals.calls.count(PENDING)})

    async def call(self, request: web.Request) -> web.Response:
        """One call's story."""
        call_id = request.match_info["call_id"]
        rows = await self._parts.audit.query(AuditQuery({"call_id": call_id}))
        record = await self._parts.approvals.calls.get(call_id)
        if not rows and record is None:
            return refused(404, "No such call", f"No call {call_id[:64]} in the audit trail.")
        story = call_story(call_id, rows, record)
        body = pages.call_page(story, record, request[VIEWER])
        notice = request[NOTICE]
        return html(body, f"Call {call_id[:64]}", viewer=request[VIEWER], notice=notice)

    async def agents(self, request: web.Request) -> web.Response:
        """Every agent with a policy."""
        policies = self._parts.approvals.snapshot().policies.policies
        shown = [
            pages.AgentView(
                name,
                policies[name].owner,
                self._parts.approvals.freezes.entry(name),
                await self._budgets(policies[name]),
                await self._rests(policies[name]),
                await self._last_calls(name),
            )
            for name in sorted(policies)
        ]
        notice = request[NOTICE]
        body = pages.agents(shown, request[VIEWER])
        return html(body, "Agents", viewer=request[VIEWER], current="agents", notice=notice)

    async def _budgets(self, policy: Policy) -> list[str]:
        """The agent's daily budgets and per-action budgets, as spent today."""
        day, _ = today()
        wanted: list[tuple[str, str, ToolBudget | Limits]] = [
            ("", f"agent:{policy.agent}", policy.limits)
        ]
        wanted += [
            (f"{grant.tool} ", f"tool:{policy.agent}:{grant.tool}", grant.budget)
            for grant in policy.grants
            if grant.budget is not None and not grant.tool.endswith(".*")
        ]
        found = []
        for label, scope, limits in wanted:
            if limits.calls_per_day is None and limits.cost_per_day is None:
                continue
            used = await self._parts.budgets.usage(scope, day)
            if limits.calls_per_day is not None:
                found.append(f"{label}calls {used.calls} of {limits.calls_per_day}")
            if limits.cost_per_day is not None:
                found.append(f"{label}cost {used.cost} of {limits.cost_per_day}")
        return found

    async def _rests(self, policy: Policy) -> list[str]:
        """The agent's tools resting after an upstream's 429."""
        rests = []
        for tool in sorted({grant.tool.split(".")[0] for grant in policy.grants}):
            left = await self._parts.limiters.rest_left(tool)
            if left > 0:
                rests.append(f"{tool} rests {span(left)} more (the upstream asked)")
        return rests

    async def _last_calls(self, agent: str) -> list[AuditRow]:
        rows = await self._parts.audit.query(
            AuditQuery({"agent": agent, "rpc": "call"}, limit=10 * LAST_CALLS, newest=True)
        )
        finals = [row for row in reversed(rows) if row.event not in STEP_EVENTS]
        return finals[:LAST_CALLS]

    async def audit(self, request: web.Request) -> web.Response:
        """The newest matching records, a page at a time."""
        filters = _filters(request)
        if isinstance(filters, str):
            return refused(400, "Bad filter", filters, request[VIEWER])
        query, found = filters
        before = _number(request.query.get("before"))
        rows = await self._parts.audit.query(
            AuditQuery(
                query.equals,
                since_ms=query.since_ms,
                until_ms=query.until_ms,
                before_seq=before,
                limit=PAGE_SIZE + 1,
                newest=True,
            )
        )
        rows.reverse()  # newest first on the page
        older = rows[PAGE_SIZE - 1].seq if len(rows) > PAGE_SIZE else None
        chain = await self._chain_status()
        body = pages.audit(rows[:PAGE_SIZE], found, older, chain, request[VIEWER])
        return html(body, "Audit", viewer=request[VIEWER], current="audit")

    async def export(self, request: web.Request) -> web.StreamResponse:
        """Every matching record as JSON lines, in chain order, streamed."""
        filters = _filters(request)
        if isinstance(filters, str):
            return refused(400, "Bad filter", filters, request[VIEWER])
        query, _ = filters
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson; charset=utf-8",
                "Content-Disposition": 'attachment; filename="audit.jsonl"',
            }
        )
        await response.prepare(request)
        after = 0
        while True:  # bounded: each round moves past the last seq it wrote
            rows = await self._parts.audit.query(
                AuditQuery(
                    query.equals,
                    since_ms=query.since_ms,
                    until_ms=query.until_ms,
                    after_seq=after,
                    limit=EXPORT_BATCH,
                )
            )
            if rows:
                await response.write("".join(record_json(r) + "\n" for r in rows).encode())
                after = rows[-1].seq
            if len(rows) < EXPORT_BATCH:
                break
        await response.write_eof()
        return response

    async def verify_chain(self, request: web.Request) -> web.Response:
        """Check the whole chain now (POST: it reads every record)."""
        verdict = await verify(
            self._parts.audit, self._public_key, broker_id=self._parts.settings.broker_id
        )
        at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if verdict.ok:
            self._last_check = (
                f"verified at {at} by {request[VIEWER].name}: {verdict.records} records and "
                f"{verdict.checkpoints} checkpoints check out"
            )
        else:
            self._last_check = f"FAILED at {at}: {verdict.problem}"
        return await self.audit(request)

    async def _chain_status(self) -> str:
        marks = await self._parts.audit.checkpoints()
        if not marks:
            newest = "No signed checkpoint yet."
        else:
            mark = marks[-1]
            newest = (
                f"Newest signed checkpoint: record #{mark.seq}, {moment(mark.ts_ms)} "
                f"({esc(mark.kind)})."
            )
        return f"{newest} Last check: {esc(self._last_check)}."

    async def reconcile(self, request: web.Request) -> web.Response:
        """Writes whose outcome was lost."""
        records = await self._parts.approvals.calls.in_states((UNKNOWN,))
        records.sort(key=lambda r: r.updated_ms)
        notice = request[NOTICE]
        body = pages.reconcile(records, request[VIEWER])
        return html(body, "Reconcile", viewer=request[VIEWER], current="reconcile", notice=notice)


def _filters(request: web.Request) -> tuple[AuditQuery, pages.AuditFilters] | str:
    """The audit filters of the query string, or what is wrong with them."""
    given = pages.AuditFilters(
        **{
            name: request.query.get(name, "").strip()[:200]
            for name in ("agent", "tool", "task", "outcome", "since", "until")
        }
    )
    equals = {
        column: value
        for column, value in (
            ("agent", given.agent),
            ("tool", given.tool),
            ("task_id", given.task),
            ("decision", given.outcome),
        )
        if value
    }
    times: list[int | None] = []
    for name in ("since", "until"):
        text = getattr(given, name)
        if not text:
            times.append(None)
            continue
        if not _MOMENT.fullmatch(text):
            return f"'{text}' is not a time: write 2026-12-07 or 2026-12-07T08:00 (UTC)"
        moment_ = datetime.fromisoformat(text).replace(tzinfo=UTC)
        times.append(int(moment_.timestamp() * 1000))
    return AuditQuery(equals, since_ms=times[0], until_ms=times[1]), given


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) < 19 else None
