"""``broker mcp`` at work: the broker clients for its agents, and the front served over stdio
or streamable HTTP until the client goes away (stdio) or a signal stops it (HTTP).
``broker.commands.mcp_command`` loads this module only when ``broker mcp`` runs: the MCP SDK
takes half a second to import, which no other command should pay."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
from mcp.server.lowlevel import NotificationOptions
from mcp.server.stdio import stdio_server

from broker.client import AsyncBrokerClient
from broker.commands.agent_access import agent_credentials, broker_address
from broker.errors import ConfigError
from broker.mcp_front import http_front, stdio_pipes
from broker.mcp_front.front import FRONT, AgentLink, McpFront
from broker.mcp_front.names import ToolNames
from broker.settings import load_settings
from broker.storage.backend import state_store
from broker.vault import SecretBox, Vault, load_master_key

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    """Serve the front as ``args`` say; 0 when it stopped."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if len(args.agent) != len(args.key):
        raise ConfigError("broker mcp", "give one --key for each --agent, in the same order")
    if not args.http and len(args.agent) > 1:
        raise ConfigError("broker mcp", "stdio serves one agent; serve several with --http")
    if args.approval_wait < 0 or args.tools_poll < 0:
        raise ConfigError("broker mcp", "--approval-wait and --tools-poll cannot be negative")
    if args.http and not args.config:
        raise ConfigError("broker mcp --http", "give --config: the tokens are broker secrets")
    pairs = zip(args.agent, args.key, strict=True)
    credentials = [agent_credentials(key, agent) for agent, key in pairs]
    target, broker_id = broker_address(args.config, args.target, args.broker_id)
    task: str | None = args.task or None  # None: a task per UTC day (front.day_task)

    async def run() -> None:
        links = [
            AgentLink(
                each.agent,
                AsyncBrokerClient(
                    target, each, broker_id=broker_id, timeout=args.timeout, front=FRONT
                ),
                ToolNames(args.tool_names),
            )
            for each in credentials
        ]
        try:
            if args.http:
                await _serve_http(args, links, task)
            else:
                await _serve_stdio(args, links, task)
        finally:
            for link in links:
                await link.client.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


async def _serve_stdio(args: argparse.Namespace, links: list[AgentLink], task: str | None) -> None:
    front = McpFront(lambda ctx: links[0], links, task_id=task, approval_wait_s=args.approval_wait)
    log.info("MCP front for agent %s on stdio (task %s)", links[0].agent, task or "per day")
    options = front.server.create_initialization_options(NotificationOptions(tools_changed=True))
    async with (
        _wire() as wire,
        stdio_server(*wire) as (read, write),
        _watching(front, args.tools_poll),
    ):
        await front.server.run(read, write, options)


async def _serve_http(args: argparse.Namespace, links: list[AgentLink], task: str | None) -> None:
    host, _, port_text = args.http.rpartition(":")
    host = host or "127.0.0.1"  # a port alone: loopback, never every interface by default
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError("broker mcp --http", f"'{args.http}' is not HOST:PORT or PORT")
    settings = load_settings(args.config)
    master_key = load_master_key(settings, os.environ)
    state = state_store(settings, patient=True)
    await state.open()
    try:
        tokens = http_front.AgentTokens(
            Vault(state.secrets, SecretBox(master_key) if master_key else None),
            [link.agent for link in links],
        )
        await tokens.check_all_set()
        by_agent = {link.agent: link for link in links}
        front = McpFront(
            lambda ctx: by_agent[http_front.authenticated_agent(ctx.request)],
            links,
            task_id=task,
            approval_wait_s=args.approval_wait,
        )
        app = front.server.streamable_http_app(
            transport_security=http_front.transport_security(
                host, args.allowed_host, args.allowed_origin
            ),
            host=host,
        )
        sock = http_front.bind(host, int(port_text))
        address = sock.getsockname()
        log.info(
            "MCP front for %s on http://%s:%d/mcp (task %s)",
            ", ".join(by_agent),
            host,
            address[1],
            task or "per day",
        )
        async with _watching(front, args.tools_poll):
            await http_front.serve(http_front.RequireAgentToken(app, tokens), sock)
    finally:
        await state.close()


@contextlib.asynccontextmanager
async def _wire() -> AsyncIterator[tuple[Any, ...]]:
    """stdin and stdout on the event loop when they are pipes (as MCP clients start us); the
    SDK's own threaded files otherwise (a file or a terminal)."""
    if stdio_pipes.is_pipe(0) and stdio_pipes.is_pipe(1):
        async with stdio_pipes.pipe_stdio() as pipes:
            yield pipes
    else:
        yield ()


@contextlib.asynccontextmanager
async def _watching(front: McpFront, interval_s: float) -> AsyncIterator[None]:
    """Look for changed tool lists in the background while the front serves."""
    async with anyio.create_task_group() as group:
        if interval_s > 0:
            group.start_soon(front.watch_listings, interval_s)
        yield
        group.cancel_scope.cancel()
