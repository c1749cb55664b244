"""Doubles that our tests and tool authors share: a recording fake upstream, a real broker on
port 0 in a background thread, and a workspace that writes tools and policies for it.

    ws = Workspace(tmp_path)
    with FakeUpstream() as upstream:
        ws.tool("invoices", base_url=upstream.url, allow_private_network=True, actions={...})
        agent = ws.agent("invoice-agent", grants=["invoices.list"])
        with ws.broker() as broker, broker.client(agent) as client:
            client.call("invoices.list", {})
        assert upstream.requests[0].path == "/invoices"

A fake upstream is a plain callable that records: assert on what reached it, not on which
function ran.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

import yaml
from aiohttp import WSMsgType, web

from broker.approvals.admin import admin_key_path
from broker.client import AdminClient, ApprovalPending, BrokerClient, ToolResult
from broker.commands.storage_access import with_audit
from broker.server import Broker
from broker.settings import BrokerSettings, load_settings
from broker.signing import AgentCredentials
from broker.storage.records import AuditQuery, AuditRow
from broker.storage.sqlite_audit import read_audit_rows


def eventually(predicate: Callable[[], object], seconds: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, for work the broker does in the background (a call
    run after its approval, a record written); AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)  # the broker works in its own thread or process; bounded by the deadline
    assert predicate(), f"not so within {seconds:g}s"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached the fake upstream."""

    method: str
    path: str  # exactly as sent, percent-encoding kept
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Reply:
    """What the fake upstream answers."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering, for timeout tests

    def encoded(self) -> tuple[bytes, str]:
        """The body bytes and their content type."""
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        if isinstance(self.body, str):
            return self.body.encode(), self.headers.get("Content-Type", "text/plain")
        return json.dumps(self.body).encode(), "application/json"


Responder = Callable[[RecordedRequest], Reply]


class _LoopbackServer:
    """An HTTP server on 127.0.0.1 (a free port), served from a background thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> Self:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeUpstream(_LoopbackServer):
    """An HTTP server on 127.0.0.1 (a free port) that records every request and answers with
    ``respond(request)``; ``respond`` may be replaced between calls."""

    def __init__(self, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or (lambda request: Reply())
        self.requests: list[RecordedRequest] = []
        super().__init__(self._handler())

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorded = RecordedRequest(
                    self.command,
                    parts.path,
                    parse_qsl(parts.query, keep_blank_values=True),
                    {key.lower(): value for key, value in self.headers.items()},
                    body,
                )
                upstream.requests.append(recorded)
                reply = upstream.respond(recorded)
                if reply.delay:
                    threading.Event().wait(reply.delay)
                payload, content_type = reply.encoded()
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    if key.lower() != "content-type":
                        self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``requests`` instead."""

        return Handler


class FakeWitness(_LoopbackServer):
    """An HTTP audit witness on 127.0.0.1: keeps every checkpoint POSTed to it (``held``,
    as JSON objects) and answers a GET with them; while ``down``, answers 503 to both."""

    def __init__(self) -> None:
        self.held: list[dict[str, Any]] = []
        self.down = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if fake.down:
                    self._answer(503, b'{"error": "down"}')
                    return
                fake.held.append(json.loads(body))
                self._answer(201, b"{}")

            def do_GET(self) -> None:
                if fake.down:
                    self._answer(503, b'{"error": "down"}')
                    return
                self._answer(200, json.dumps(fake.held).encode())

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``held`` instead."""

        super().__init__(Handler)

    @property
    def url(self) -> str:
        """Where to POST checkpoints and GET them back."""
        return f"http://127.0.0.1:{self.port}/checkpoints"


@dataclass(frozen=True)
class SlackCall:
    """One Slack Web API call as it reached the fake."""

    method: str
    payload: dict[str, Any]
    token: str


class FakeSlack(_LoopbackServer):
    """A fake Slack Web API on 127.0.0.1 that records every call (chat.postMessage, chat.update,
    chat.postEphemeral) and answers ``ok``; ``click`` sends a signed button click to a broker
    the way Slack does."""

    def __init__(self, signing_secret: str = "fake-signing-secret") -> None:  # noqa: S107
        self.signing_secret = signing_secret
        self.calls: list[SlackCall] = []
        self._ts = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                method = self.path.rsplit("/", 1)[-1]
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                payload = json.loads(body or b"{}")
                fake.calls.append(SlackCall(method, payload, token))
                fake._ts += 1
                answer = json.dumps(
                    {
                        "ok": True,
                        "channel": payload.get("channel", ""),
                        "ts": f"1700000000.{fake._ts:06d}",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``calls`` instead."""

        super().__init__(Handler)

    @property
    def api_url(self) -> str:
        """The base URL to put in the broker's ``slack.api_url``."""
        return f"http://127.0.0.1:{self.port}/api/"

    def posted(self, method: str) -> list[dict[str, Any]]:
        """The payloads of every call to ``method``."""
        return [call.payload for call in self.calls if call.method == method]

    def click(
        self,
        url: str,
        call_id: str,
        action: str,
        user: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> int:
        """Send a signed block_actions click to ``url``; the HTTP status."""
        payload = {
            "type": "block_actions",
            "user": {"id": user},
            "channel": {"id": "C-APPROVALS"},
            "actions": [{"action_id": action, "value": call_id}],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = f"v0:{ts}:".encode() + body
        key = (secret or self.signing_secret).encode()
        signature = "v0=" + hmac.new(key, base, hashlib.sha256).hexdigest()
        request = urllib.request.Request(  # noqa: S310 (tests give a loopback http URL)
            url,
            data=body,
            method="POST",
            headers={
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


class FakeSlackSocket:
    """Slack's Socket Mode on loopback: ``apps.connections.open`` hands out a websocket URL,
    other Web API calls are recorded and answered ``ok``, and ``click`` delivers an interactive
    envelope over the socket and waits for the broker's acknowledgement."""

    def __init__(self) -> None:
        self.calls: list[SlackCall] = []
        self.acks: list[str] = []
        self._socket: web.WebSocketResponse | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        """The base URL to put in the broker's ``slack.api_url``."""
        return f"http://127.0.0.1:{self.port}/api/"

    def start(self) -> FakeSlackSocket:
        """Serve in a background thread."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await request.post() if request.content_type.endswith("form-urlencoded") else {}
        payload = dict(body) if body else (await request.json() if request.can_read_body else {})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(SlackCall(method, payload, token))
        if method == "apps.connections.open":
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"})
        return web.json_response({"ok": True, "ts": "1700000000.000001"})

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        await socket.send_json({"type": "hello", "num_connections": 1})
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                envelope = json.loads(message.data)
                if "envelope_id" in envelope:
                    self.acks.append(envelope["envelope_id"])
        return socket

    @property
    def connected(self) -> bool:
        """True once the broker has opened the socket."""
        return self._socket is not None and not self._socket.closed

    def click(self, call_id: str, action: str, user: str, seconds: float = 10.0) -> bool:
        """Deliver a button click; True once the broker acknowledged it."""
        envelope_id = f"env-{len(self.acks)}-{call_id}"
        payload = {
            "type": "block_actions",
            "user": {"id": user},
            "channel": {"id": "C-APPROVALS"},
            "actions": [{"action_id": action, "value": call_id}],
        }
        message = {
            "envelope_id": envelope_id,
            "type": "interactive",
            "payload": payload,
            "accepts_response_payload": False,
        }
        assert self._socket is not None, "the broker has not connected"
        asyncio.run_coroutine_threadsafe(self._socket.send_json(message), self._loop).result(10)
        deadline = time.monotonic() + seconds
        while envelope_id not in self.acks and time.monotonic() < deadline:
            time.sleep(0.02)  # the ack arrives on the fake's own loop; bounded
        return envelope_id in self.acks

    def stop(self) -> None:
        """Close the socket and stop serving."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FakeSlackSocket:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RunningBroker:
    """A real broker (real gRPC server, real SQLite) on its own event loop in a thread."""

    def __init__(self, settings: BrokerSettings, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = env or {}  # the broker sees only this environment, not the test process's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Broker | None = None

    @property
    def target(self) -> str:
        """``127.0.0.1:<port>`` of the running broker."""
        assert self._broker is not None
        return f"127.0.0.1:{self._broker.port}"

    @property
    def http_url(self) -> str:
        """The base URL of the broker's HTTP side."""
        assert self._broker is not None
        return f"http://127.0.0.1:{self._broker.http_port}"

    def admin(self) -> AdminClient:
        """An admin client signing with the broker's local admin key."""
        credentials = AgentCredentials.load(admin_key_path(self.settings))
        return AdminClient(self.target, credentials, broker_id=self.settings.broker_id)

    def start(self) -> RunningBroker:
        """Start the broker; a ConfigError or bind failure is raised here."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._broker = Broker(self.settings, self.env)
        try:
            asyncio.run_coroutine_threadsafe(self._broker.start(), self._loop).result(30)
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        """Stop the broker and its loop."""
        if self._broker is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._broker.stop(0.5), self._loop).result(30)
        self._shutdown_loop()

    def reload(self) -> bool:
        """Ask the broker to load its files again (what SIGHUP does); True when accepted."""
        assert self._broker is not None and self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._broker.reload(), self._loop).result(30)

    def restart(self) -> RunningBroker:
        """Stop, then start again on the same data directory (and a new port)."""
        self.stop()
        return self.start()

    def _shutdown_loop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()
        self._loop, self._thread = None, None

    def client(self, credentials: AgentCredentials, **kwargs: Any) -> BrokerClient:
        """A blocking SDK client for ``credentials`` against this broker."""
        return BrokerClient(self.target, credentials, broker_id=self.settings.broker_id, **kwargs)

    def __enter__(self) -> RunningBroker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def read_audit(source: Path | BrokerSettings, call_id: str | None = None) -> list[AuditRow]:
    """The audit records of a broker (or one call's), in chain order: what a test asserts on,
    read while the broker runs or after it stopped. ``source``: the broker's settings (the
    trail wherever they put it), or the SQLite database file beside which it is."""
    if isinstance(source, Path):
        return read_audit_rows(source, call_id)
    query = AuditQuery({"call_id": call_id} if call_id else {})
    return with_audit(source, lambda reader: reader.query(query), required=False)


def await_decision(client: BrokerClient, call_id: str, seconds: float = 10.0) -> ToolResult:
    """Await a pending call until it is decided (its result, or its refusal raised), however
    many Await rounds that takes, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return client.await_call(call_id, wait_ms=500)
        except ApprovalPending:
            if time.monotonic() > deadline:
                raise


class Workspace:
    """A folder with a broker config, ``tools/`` and ``policies/``, written from Python."""

    def __init__(
        self, root: Path, broker_id: str = "broker.test", database_url: str | None = None
    ) -> None:
        self.root = root
        self.broker_id = broker_id
        self.database_url = database_url  # the state on PostgreSQL, else SQLite in data/
        (root / "tools").mkdir(parents=True, exist_ok=True)
        (root / "policies").mkdir(parents=True, exist_ok=True)

    def tool(self, name: str, **manifest: Any) -> Path:
        """Write ``tools/<name>.yaml`` (kind defaults to http)."""
        return self.write(f"tools/{name}.yaml", {"name": name, "kind": "http", **manifest})

    def agent(
        self, agent: str, grants: Iterable[str | dict[str, Any]] = (), **policy: Any
    ) -> AgentCredentials:
        """Make a key pair for ``agent`` and write its policy with ``grants``."""
        credentials = AgentCredentials.generate(agent)
        keys = [{"id": credentials.key_id, "ed25519": credentials.public_key_b64}]
        keys += policy.pop("keys", [])
        grants_list = [g if isinstance(g, dict) else {"tool": g} for g in grants]
        self.write(
            f"policies/{agent}.yaml",
            {"agent": agent, "keys": keys, "grants": grants_list, **policy},
        )
        return credentials

    def write(self, relative: str, content: Any) -> Path:
        """Write a file under the workspace: YAML for data, as is for text."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    def settings(self, **overrides: Any) -> BrokerSettings:
        """Write ``broker.yaml`` and load it the way ``broker run`` does."""
        config = {
            "broker_id": self.broker_id,
            "listen": "127.0.0.1:0",
            "data_dir": "data",
            "policies": "policies",
            "tools": "tools",
            **({"database_url": self.database_url} if self.database_url else {}),
            **overrides,
        }
        return load_settings(self.write("broker.yaml", config))

    def broker(self, env: dict[str, str] | None = None, **overrides: Any) -> RunningBroker:
        """A broker on this workspace (start it with ``with``)."""
        return RunningBroker(self.settings(**overrides), env)

    @property
    def database(self) -> Path:
        """The broker's SQLite file."""
        return self.root / "data" / "broker.db"

    def audit(self, call_id: str | None = None) -> list[AuditRow]:
        """The trail of this workspace's broker (or one call's), on SQLite or PostgreSQL."""
        if self.database_url is None:
            return read_audit(self.database, call_id)
        return read_audit(self.loaded(), call_id)

    def loaded(self) -> BrokerSettings:
        """The settings ``broker.yaml`` holds now (as ``settings`` last wrote it)."""
        return load_settings(self.root / "broker.yaml")
