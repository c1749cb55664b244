"""The web console on the broker's HTTP side, under ``/console/``: routes, and the guard every
request passes (session, CSRF token, same origin, security headers).

Server-rendered HTML, one stylesheet and one small script (progressive enhancement: every page
works without it). The pages and actions are ``views.py`` and ``actions.py``; signing in is
``signin.py`` and ``oidc.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from urllib.parse import unquote, urlsplit

from aiohttp import web

from broker.approvals.service import Approvals
from broker.audit.trail import AuditTrail
from broker.console.actions import Actions
from broker.console.context import FORM, NOTICE, NOTICE_COOKIE, VIEWER, ConsoleParts
from broker.console.oidc import OidcLogin
from broker.console.replies import refused, secured, see_other
from broker.console.signin import SignIn, to_signin
from broker.console.tokens import ConsoleTokens
from broker.console.views import Views
from broker.identity import ReplayGuard
from broker.limits.rates import Limiters
from broker.settings import BrokerSettings
from broker.storage.interfaces import AuditReader, StateStore

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC = ("/console/signin", "/console/login", "/console/oidc/start", "/console/oidc/callback")
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


class Console:
    """Mounts the console on an aiohttp application."""

    def __init__(self, parts: ConsoleParts, env: Mapping[str, str]) -> None:
        self._parts = parts
        oidc = parts.console.oidc
        self._signin = SignIn(parts, oidc_enabled=oidc is not None)
        self._oidc = OidcLogin(oidc, parts, self._signin, env) if oidc is not None else None
        self._views = Views(parts)
        self._actions = Actions(parts)
        folder = resources.files("broker.console").joinpath("static")
        self._static = {name: folder.joinpath(name).read_bytes() for name in STATIC}

    def mount(self, app: web.Application) -> None:
        """Add the console's routes to ``app`` (the HTTP side's)."""
        console = web.Application(middlewares=[self._guard])
        views, actions = self._views, self._actions
        get = console.router.add_get
        post = console.router.add_post
        get("/", views.queue)
        get("/queue/count", views.queue_count)
        get("/calls/{call_id}", views.call)
        get("/agents", views.agents)
        get("/audit", views.audit)
        get("/audit/export", views.export)
        get("/reconcile", views.reconcile)
        get("/signin", self._signin.page)
        get("/login", self._signin.link)
        get("/static/{name}", self._file)
        post("/calls/{call_id}/approve", actions.approve)
        post("/calls/{call_id}/deny", actions.deny)
        post("/calls/{call_id}/reconcile", actions.reconcile)
        post("/agents/{agent}/freeze", actions.freeze)
        post("/agents/{agent}/unfreeze", actions.unfreeze)
        post("/audit/verify", views.verify_chain)
        post("/logout", self._signin.logout)
        if self._oidc is not None:
            get("/oidc/start", self._oidc.start)
            get("/oidc/callback", self._oidc.callback)
        app.add_subapp("/console/", console)
        app.router.add_get("/console", self._slash)

    async def _slash(self, request: web.Request) -> web.StreamResponse:
        return secured(see_other("/console/"))

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._static:
            return refused(404, "Not found", "No such file.")
        response = web.Response(body=self._static[name], content_type=STATIC[name])
        response.headers["Cache-Control"] = "no-cache"
        return response

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._checked(request, handler)
        except web.HTTPException as exc:  # aiohttp's own: no such page, method not allowed
            response = refused(exc.status, exc.reason, "There is nothing here; see the queue.")
        except Exception:  # a store that failed under a click: a page, never a trace
            log.exception("the console could not answer %s %s", request.method, request.path)
            response = refused(
                503,
                "Not done",
                "The broker could not finish this (its log says why). Reload the page to see "
                "where things stand before you try again.",
            )
        return secured(response)

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC or request.path.startswith("/console/static/"):
            return await handler(request)
        session = self._signin.session(request)
        if isinstance(session, str):
            if request.path == "/console/queue/count":
                return web.json_response({"error": "sign in again"}, status=401)
            return to_signin(session)
        csrf = self._parts.tokens.csrf(session.claims.token_id)
        request[VIEWER] = self._parts.viewer(session.operator, csrf)
        request[NOTICE] = unquote(request.cookies.get(NOTICE_COOKIE, ""))[:300]
        if request.method == "POST":
            if not self._same_origin(request):
                log.warning("refused a console form posted from %s", request.headers["Origin"])
                return refused(403, "Refused", "This form was posted from another site.")
            posted = await request.post()
            form = {key: value for key, value in posted.items() if isinstance(value, str)}
            request[FORM] = form
            if not self._parts.tokens.csrf_valid(session.claims.token_id, form.get("csrf", "")):
                log.warning("refused a form of %s without its CSRF token", session.operator.name)
                return refused(
                    403,
                    "Form refused",
                    "This form came without its security token (CSRF), or with another "
                    "session's. Nothing changed: reload the page and try again.",
                    request[VIEWER],
                )
        response = await handler(request)
        if request[NOTICE] and response.status == 200:
            response.del_cookie(NOTICE_COOKIE, path="/console")  # shown once
        return response

    def _same_origin(self, request: web.Request) -> bool:
        """True unless the browser says the form came from another origin."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # the CSRF token decides
        own = {f"{request.scheme}://{request.host}", _origin(self._parts.base_url)}
        return origin in own


async def console_for(
    settings: BrokerSettings,
    approvals: Approvals,
    trail: AuditTrail,
    state: StateStore,
    limiters: Limiters,
    audit: AuditReader,
    env: Mapping[str, str],
) -> Console | None:
    """The web console of a starting broker, when its config has one. Its one-time links
    are claimed like agents' nonces (their window: the links' lifetime)."""
    if settings.console is None:
        return None
    window_ms = int(settings.console.link_ttl * 1000)
    links = await ReplayGuard.load(audit, window_ms, state.nonces)
    parts = ConsoleParts(
        settings,
        approvals,
        audit,
        state.budgets,
        limiters,
        ConsoleTokens.of(settings),
        links,
        trail.record,
    )
    return Console(parts, env)


def _origin(address: str) -> str:
    parts = urlsplit(address)
    return f"{parts.scheme}://{parts.netloc}"
