"""What people do in the console: approve, deny, freeze, unfreeze, reconcile.

Each arrives as a POST whose session and CSRF token the app's guard has checked. Each is
checked again here against the policy in force (a decision only by one of the agent's
approvers), then carried out by the same approvals service as Slack and the command line: a
decision is one compare-and-set, so a double click, or a click racing a Slack click, decides
once and runs the call once. Who did it, and their comment, go into the audit trail.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web

from broker import errors
from broker.console.context import FORM, NOTICE_COOKIE, VIEWER, ConsoleParts, person
from broker.console.replies import refused, see_other

log = logging.getLogger(__name__)

MAX_TEXT = 2000


class Actions:
    """POST handlers; the form is in ``request[FORM]``, the person in ``request[VIEWER]``."""

    def __init__(self, parts: ConsoleParts) -> None:
        self._parts = parts

    async def approve(self, request: web.Request) -> web.Response:
        """Approve a pending call (an optional comment)."""
        return await self._decide(request, approve=True)

    async def deny(self, request: web.Request) -> web.Response:
        """Deny a pending call (a reason is required: the agent is told it)."""
        return await self._decide(request, approve=False)

    async def _decide(self, request: web.Request, *, approve: bool) -> web.Response:
        viewer = request[VIEWER]
        call_id = request.match_info["call_id"]
        text = _text(request, "comment" if approve else "reason")
        if not approve and not text:
            return refused(
                400, "A reason is needed", "Say why you deny this call: the agent is told.", viewer
            )
        record = await self._parts.approvals.calls.get(call_id)
        if record is None:
            return refused(404, "No such call", f"No call {call_id[:64]}.", viewer)
        if not viewer.may_decide(record.agent):
            log.warning("%s is not an approver of %s; decision refused", viewer.name, record.agent)
            return refused(
                403,
                "Not an approver",
                f"You are not an approver of {record.agent}; nothing changed. The agent's "
                "policy names who may decide its calls (approvers).",
                viewer,
            )
        try:
            await self._parts.approvals.decide(call_id, approve, person(viewer.name), text)
        except errors.AlreadyDecided as exc:
            return _back(request, f"Nothing changed: {exc.message}.")
        verb = "approved; it runs now" if approve else "denied"
        return _back(request, f"Call {call_id} ({record.agent} {record.tool}) {verb}.")

    async def freeze(self, request: web.Request) -> web.Response:
        """Freeze an agent: its pending calls are cancelled, its next calls refused."""
        return await self._freeze(request, freeze=True)

    async def unfreeze(self, request: web.Request) -> web.Response:
        """Lift an agent's freeze."""
        return await self._freeze(request, freeze=False)

    async def _freeze(self, request: web.Request, *, freeze: bool) -> web.Response:
        viewer = request[VIEWER]
        agent = request.match_info["agent"]
        reason = _text(request, "reason")
        if not reason:
            return refused(400, "A reason is needed", "Say why: it is audited.", viewer)
        if agent not in self._parts.approvals.snapshot().policies.policies:
            return refused(404, "No such agent", f"No agent {agent[:64]} has a policy.", viewer)
        if not viewer.may_operate(agent):
            return refused(
                403,
                "Not allowed",
                f"Only an admin or an approver of {agent} may freeze or unfreeze it.",
                viewer,
            )
        if freeze:
            cancelled = await self._parts.approvals.freeze(agent, reason, person(viewer.name))
            notice = f"{agent} frozen; {cancelled} pending call(s) cancelled."
        else:
            lifted = await self._parts.approvals.unfreeze(agent, reason, person(viewer.name))
            notice = f"{agent} unfrozen." if lifted else f"{agent} was not frozen by itself."
        return _back(request, notice, fallback="/console/agents")

    async def reconcile(self, request: web.Request) -> web.Response:
        """Record what a person found about a write whose outcome was lost."""
        viewer = request[VIEWER]
        call_id = request.match_info["call_id"]
        note = _text(request, "note")
        if not note:
            return refused(400, "A note is needed", "Say what the tool shows happened.", viewer)
        record = await self._parts.approvals.calls.get(call_id)
        if record is None:
            return refused(404, "No such call", f"No call {call_id[:64]}.", viewer)
        if not viewer.may_operate(record.agent):
            return refused(
                403, "Not allowed", f"Only an admin or an approver of {record.agent}.", viewer
            )
        try:
            await self._parts.approvals.reconcile(call_id, person(viewer.name), note)
        except errors.AlreadyDecided as exc:
            return _back(request, f"Nothing changed: {exc.message}.", fallback="/console/reconcile")
        return _back(request, f"Call {call_id} reconciled.", fallback="/console/reconcile")


def _text(request: web.Request, name: str) -> str:
    return request[FORM].get(name, "").strip()[:MAX_TEXT]


def _back(request: web.Request, notice: str, fallback: str = "/console/") -> web.Response:
    """Back to ``fallback`` with ``notice`` shown once there (in a cookie, not the URL: nobody
    can send a link that makes the console say something)."""
    response = see_other(fallback)
    response.set_cookie(
        NOTICE_COOKIE,
        quote(notice[:300]),
        max_age=60,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response
