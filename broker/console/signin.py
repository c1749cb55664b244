"""Signing in to the console: one-time links from ``broker console login``, the session cookie,
signing out. (OIDC, the production path, is ``oidc.py``; it ends in ``begin_session`` too.)

A link is claimed once, by id, through the same replay guard as agents' nonces: in memory, in
the shared state with replicas, and in the audit trail (the sign-in record carries the id as
its nonce), so a used link stays used after a restart. A session is a signed cookie:
HttpOnly, SameSite=Strict, Path=/console, Secure over https.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from broker.audit.events import event_row
from broker.console.context import SESSION_COOKIE, ConsoleParts, person
from broker.console.markup import esc
from broker.console.pages import signin
from broker.console.replies import html, refused, see_other
from broker.console.tokens import Claims, TokenRefused
from broker.settings import ConsoleOperator
from broker.signing import now_ms
from broker.storage.records import StoreError

log = logging.getLogger(__name__)

WHY = {
    "expired": "Your session has expired: sign in again.",
    "signed_out": "You are signed out.",
    "unknown": "You are no longer an operator of this console.",
    "required": "Sign in to use the console.",
}


@dataclass(frozen=True)
class Session:
    """A signed-in operator and their session's claims."""

    operator: ConsoleOperator
    claims: Claims


class SignIn:
    """The sign-in page, one-time links, the session cookie and signing out."""

    def __init__(self, parts: ConsoleParts, oidc_enabled: bool) -> None:
        self._parts = parts
        self._oidc = oidc_enabled

    def session(self, request: web.Request) -> Session | str:
        """The request's session, or why there is none (a key of WHY)."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return "required"
        try:
            claims = self._parts.tokens.read("session", token, now_ms())
        except TokenRefused as exc:
            return "expired" if exc.expired else "required"
        operator = self._parts.operator(claims.user)
        return Session(operator, claims) if operator is not None else "unknown"

    async def page(self, request: web.Request) -> web.Response:
        """GET /console/signin."""
        message = WHY.get(request.query.get("why", ""), "")
        minutes = self._parts.console.link_ttl / 60
        return html(signin(message, self._oidc, minutes), "Sign in")

    async def link(self, request: web.Request) -> web.Response:
        """GET /console/login?token=...: a one-time link signs its operator in, once."""
        now = now_ms()
        try:
            claims = self._parts.tokens.read("link", request.query.get("token", ""), now)
        except TokenRefused as exc:
            message = (
                "This sign-in link has expired."
                if exc.expired
                else "This is not a sign-in link this broker made."
            )
            return _link_refused(message)
        operator = self._parts.operator(claims.user)
        if operator is None:
            return _link_refused(f"{claims.user} is not an operator of this console.")
        try:
            first = await self._parts.links.claim(
                f"console-link:{claims.token_id}", claims.expires_ms, now
            )
        except StoreError:
            return refused(503, "Try again", "The broker cannot check this link now; try again.")
        if not first:
            log.warning("a used sign-in link of %s was opened again", operator.name)
            return _link_refused("This sign-in link was already used; each link works once.")
        await self._audit(operator, "link", f"console-link:{claims.token_id}")
        return self.begin_session(operator)

    def begin_session(self, operator: ConsoleOperator) -> web.Response:
        """Set the session cookie and go on to the queue.

        A page that moves on by itself rather than a redirect: the sign-in may arrive from
        another site (a mail, the identity provider), and a SameSite=Strict cookie is sent on
        the page's own next navigation, not on a redirect chain that began elsewhere."""
        console = self._parts.console
        token = self._parts.tokens.issue("session", operator.name, console.session_ttl, now_ms())
        body = (
            f"<h1>Signed in</h1><p>Signed in as <strong>{esc(operator.name)}</strong>.</p>"
            '<p><a href="/console/">Continue to the queue</a></p>'
        )
        response = html(body, "Signed in", refresh="/console/")
        response.set_cookie(  # no max-age: the token's own expiry decides, and says so
            SESSION_COOKIE,
            token,
            path="/console",
            httponly=True,
            samesite="Strict",
            secure=self._parts.secure_cookies,
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """POST /console/logout (its CSRF token checked before)."""
        response = see_other("/console/signin?why=signed_out")
        response.del_cookie(SESSION_COOKIE, path="/console")
        return response

    async def audit_oidc(self, operator: ConsoleOperator) -> None:
        """Record a sign-in through the identity provider."""
        await self._audit(operator, "oidc", "")

    async def _audit(self, operator: ConsoleOperator, how: str, nonce: str) -> None:
        row = event_row(
            "console_sign_in",
            call_id="",
            agent="",
            by=person(operator.name),
            detail={"how": how},
            nonce=nonce,
        )
        await self._parts.record(row, f"console sign-in of {operator.name}")


def _link_refused(message: str) -> web.Response:
    return refused(
        403,
        "Sign-in link refused",
        f"{message} Ask for a new one: broker console login --user NAME --config broker.yaml",
    )


def to_signin(why: str) -> web.Response:
    """Send a request without a valid session to the sign-in page (dropping a stale cookie)."""
    response = see_other(f"/console/signin?why={why}")
    if why in ("expired", "unknown"):
        response.del_cookie(SESSION_COOKIE, path="/console")
    return response
