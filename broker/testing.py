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
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from broker.client import BrokerClient
from broker.identity import AgentCredentials
from broker.server import Broker
from broker.settings import BrokerSettings, load_settings


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


class FakeUpstream:
    """An HTTP server on 127.0.0.1 (a free port) that records every request and answers with
    ``respond(request)``; ``respond`` may be replaced between calls."""

    def __init__(self, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or (lambda request: Reply())
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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

    def start(self) -> FakeUpstream:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeUpstream:
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


class Workspace:
    """A folder with a broker config, ``tools/`` and ``policies/``, written from Python."""

    def __init__(self, root: Path, broker_id: str = "broker.test") -> None:
        self.root = root
        self.broker_id = broker_id
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
