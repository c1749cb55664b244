"""The MCP front over streamable HTTP: who may use it, and from where.

Each agent's MCP client sends ``Authorization: Bearer <token>``; the token is the broker
secret ``mcp-token.<agent>`` (``broker secrets set mcp-token.<agent>``), compared in constant
time, and it decides which agent's key signs the request. A request without a known token
gets 401 and reaches nothing. The token never leaves the front: requests to the broker are
signed with the agent's key, and no header of the client's goes anywhere.

Bound to 127.0.0.1 unless told otherwise; the SDK's DNS-rebinding protection is always on
(the Host must be one the front serves, an Origin one it allows), so a web page in the
user's browser cannot drive the front.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Sequence
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from broker import errors
from broker.signing import now_ms
from broker.vault import Vault

log = logging.getLogger(__name__)
AGENT_SCOPE_KEY = "toolbroker.agent"  # set by the token check, read by the front
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def token_secret(agent: str) -> str:
    """The broker secret holding the bearer token of ``agent``'s MCP client."""
    return f"mcp-token.{agent}"


class AgentTokens:
    """The agents' bearer tokens, read from the broker's vault (a change made with ``broker
    secrets`` is seen within a second, as by the broker)."""

    def __init__(self, vault: Vault, agents: Sequence[str]) -> None:
        self._vault = vault
        self._agents = list(agents)

    async def check_all_set(self) -> None:
        """Refuse to start when an agent has no token (a ConfigError naming the command)."""
        for agent in self._agents:
            try:
                await self._vault.get(token_secret(agent), now_ms())
            except (errors.Sealed, errors.SecretNotSet) as exc:
                raise errors.ConfigError(
                    "broker mcp --http",
                    f"agent {agent} has no MCP token ({exc.message}); set one with: "
                    f"openssl rand -base64 32 | broker secrets set {token_secret(agent)} "
                    "--config ...",
                ) from None

    async def agent_for(self, token: str) -> str | None:
        """The agent whose token this is; None for any other token."""
        found = None
        for agent in self._agents:
            try:
                secret = await self._vault.get(token_secret(agent), now_ms())
            except (errors.Sealed, errors.SecretNotSet):
                continue
            # every agent compared, in constant time: no timing says which came close
            if hmac.compare_digest(secret.value.encode(), token.encode()):
                found = agent
        return found


class RequireAgentToken:
    """ASGI middleware: a request with a known bearer token goes on, marked with its agent;
    any other gets 401 with ``WWW-Authenticate: Bearer``."""

    def __init__(self, app: ASGIApp, tokens: AgentTokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        agent = None
        if scheme.lower() == "bearer" and token.strip():
            agent = await self.tokens.agent_for(token.strip())
        if agent is None:
            await _unauthorized(send, "bearer token missing or not known" if token else "")
            return
        scope[AGENT_SCOPE_KEY] = agent
        await self.app(scope, receive, send)


async def _unauthorized(send: Send, problem: str) -> None:
    body = json.dumps(
        {
            "error": "invalid_token" if problem else "invalid_request",
            "error_description": (
                "send Authorization: Bearer <token>, the token stored as the broker secret "
                "mcp-token.<agent>"
            ),
        }
    ).encode()
    challenge = 'Bearer realm="toolbroker"' + (', error="invalid_token"' if problem else "")
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", challenge.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def authenticated_agent(request: Any) -> str:
    """The agent the token check found for this HTTP request (the front's handlers run only
    behind it, so a request without one is a bug: refused, never served as some agent)."""
    scope = getattr(request, "scope", None)
    agent = scope.get(AGENT_SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(agent, str):
        raise MCPError(INVALID_REQUEST, "this request carries no authenticated agent")
    return agent


def transport_security(
    host: str, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]
) -> TransportSecuritySettings:
    """DNS-rebinding protection: the Host names the front answers to and the Origins it
    accepts (loopback ones always; a non-loopback bind adds its own address)."""
    hosts = [f"{name}:*" for name in LOOPBACK_HOSTS]
    origins = [f"http://{name}:*" for name in LOOPBACK_HOSTS]
    if not is_loopback(host):
        hosts.append(f"{host}:*")
    hosts.extend(allowed_hosts)
    origins.extend(allowed_origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound here, so port 0 works and the log can name the port)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP said outright: asyncio turns Nagle off (TCP_NODELAY) only for sockets that
    # say they are TCP; with protocol 0 every answer waited ~40 ms for a delayed ACK (measured)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        problem = f"cannot listen on {host}:{port}: {exc}"
        raise errors.ConfigError("broker mcp --http", problem) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(app: ASGIApp, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` with uvicorn until cancelled (or SIGINT/SIGTERM)."""
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    await uvicorn.Server(config).serve(sockets=[sock])
