"""The broker's HTTP side: ``/healthz``, ``/metrics`` (Prometheus), Slack's
``/slack/interactions`` and, when configured, the web console under ``/console/``.

Slack clicks arrive here; the handler verifies the signature over the raw body before it reads
anything, and answers within Slack's three seconds (a decision is one compare-and-set; running
the approved call happens afterwards).
"""

from __future__ import annotations

from aiohttp import web

from broker.approvals.slack import MAX_BODY, SlackInteractions
from broker.console.app import Console
from broker.metrics import Metrics


class HttpSide:
    """A small aiohttp server on ``http_listen``."""

    def __init__(
        self,
        host: str,
        port: int,
        slack: SlackInteractions | None,
        metrics: Metrics,
        *,
        reuse_port: bool = False,
        console: Console | None = None,
    ) -> None:
        self._reuse_port = reuse_port  # workers of one host share the port (so_reuseport)
        self._host = host
        self._port = port
        self._slack = slack
        self._metrics = metrics
        self._console = console
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._scrape)
        if self._slack is not None:
            app.router.add_post("/slack/interactions", self._interaction)
        if self._console is not None:
            self._console.mount(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_port=self._reuse_port)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket here; there is no public getter
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._port
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "serving"})

    async def _scrape(self, request: web.Request) -> web.Response:
        body = await self._metrics.render()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _interaction(self, request: web.Request) -> web.Response:
        assert self._slack is not None
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        status, text = await self._slack.handle(body, headers)
        return web.Response(status=status, text=text)
