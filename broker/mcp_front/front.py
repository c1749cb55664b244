"""``tools/list`` and ``tools/call`` over MCP, answered by signed broker RPCs.

The front holds no policy. ``tools/list`` is the broker's ``ListTools`` for the agent;
``tools/call`` is the broker's ``Call`` signed with the agent's key (``front: mcp`` in the
envelope, which the audit records), so every check a gRPC call goes through runs, in the
broker, once. What the front adds is what MCP clients lack: an idempotency key when the client
sent none, a bounded wait for a human, and results shaped for MCP (``tool_results``).

A write's idempotency key, when the request's ``_meta`` has no ``toolbroker/idempotency_key``,
is derived from the agent, the task, the tool and the canonical arguments: a client that sends
the same write again (a retry, a reconnect, a model repeating itself) lands on the same call,
never a second execution or a second question to a human, also after the client or the front
restarted. The task is ``_meta["toolbroker/task_id"]``, else the front's ``--task``, else one
per agent and UTC day (``mcp-2026-12-05``): a day, like a policy's default ``taint_window``,
so values read from outside taint the day's writes, and the same write sent the next day is a
new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from broker import errors, jsonexact
from broker.client import ApprovalPending, AsyncBrokerClient, ToolError
from broker.mcp_front import tool_results
from broker.mcp_front.names import ToolNames
from broker.v1 import broker_pb2 as pb

log = logging.getLogger(__name__)

FRONT = "mcp"  # Envelope.front: the audit tells an MCP call from an SDK call by it alone
STATUS_TOOL = "broker_approval_status"
META_KEY = "toolbroker/idempotency_key"
META_TASK = "toolbroker/task_id"
META_INTENT = "toolbroker/intent"
AWAIT_SLICE_MS = 5_000  # one Await at most this long: progress goes out between them
MAX_LEGACY_SESSIONS = 256  # handshake-era connections told when the tool list changes
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"call_id": {"type": "string", "minLength": 1, "maxLength": 128}},
    "required": ["call_id"],
    "additionalProperties": False,
}


@dataclass
class AgentLink:
    """One agent the front signs for: its broker client and the names it was last shown."""

    agent: str
    client: AsyncBrokerClient
    names: ToolNames
    tools: dict[str, pb.ToolInfo] = field(default_factory=dict)  # by broker name
    listing: str = ""  # digest of the last list seen: a change is told to clients

    async def is_write(self, name: str) -> bool:
        """Whether the granted action ``name`` writes (from the last list, or a fresh one when
        the client calls what it has not listed); False for what the agent is not granted."""
        if name not in self.tools:
            await self.list_tools()
        tool = self.tools.get(name)
        return tool is not None and tool.write

    async def list_tools(self) -> list[pb.ToolInfo]:
        """The broker's ListTools for this agent; remembers it."""
        tools = await self.client.list_tools()
        self.tools = {tool.name: tool for tool in tools}
        return tools


def listing_digest(tools: list[pb.ToolInfo]) -> str:
    """What a client would see of a tool list, hashed: equal lists, equal digests."""
    text = b"".join(tool.SerializeToString(deterministic=True) for tool in tools)
    return hashlib.sha256(text).hexdigest()


def derived_key(agent: str, task: str, tool: str, arguments: Mapping[str, Any]) -> str:
    """The idempotency key of a write whose client sent none (see the module docstring)."""
    canonical = json.dumps(
        [agent, task, tool, arguments], sort_keys=True, separators=(",", ":"), default=str
    )
    return "mcp-" + hashlib.sha256(canonical.encode()).hexdigest()[:48]


def day_task() -> str:
    """The task of calls that name none: one per UTC day."""
    return "mcp-" + datetime.now(UTC).strftime("%Y-%m-%d")


AgentOf = Callable[[ServerRequestContext[Any, Any]], AgentLink]


class McpFront:
    """The MCP server: lists and calls the broker's tools for the agent of each request.

    ``agent_of`` says which agent a request is for (stdio: the one agent; HTTP: the agent its
    bearer token belongs to). ``approval_wait_s`` bounds how long a ``tools/call`` waits
    inline for a human before it answers ``pending_approval``."""

    def __init__(
        self,
        agent_of: AgentOf,
        links: list[AgentLink],
        *,
        task_id: str | None,
        approval_wait_s: float,
    ) -> None:
        self._agent_of = agent_of
        self._links = links
        self.task_id = task_id  # None: a task per UTC day
        self.approval_wait_s = approval_wait_s
        self._bus = InMemorySubscriptionBus()
        self._legacy: OrderedDict[str, ServerSession] = OrderedDict()
        self.server: Server[Any] = Server(
            "toolbroker",
            version="1",
            instructions=(
                "Tools behind toolbroker: each call is checked against the agent's policy, "
                "rate-limited and audited. A result with isError says why and what to do; "
                "a pending_approval result means stop and wait for a human."
            ),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_subscriptions_listen=ListenHandler(self._bus),
        )

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        link = self._agent_of(ctx)
        self._remember_session(ctx)
        try:
            granted = await link.list_tools()
        except errors.BrokerError as exc:
            # a list the client cannot get is an error of the request, not an empty list
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None
        link.listing = listing_digest(granted)
        shown = link.names.listed([tool.name for tool in granted])
        tools = [_mcp_tool(tool, shown[tool.name]) for tool in granted if tool.name in shown]
        if any(tool.write or tool.needs_approval for tool in granted):
            tools.append(_status_tool())
        return types.ListToolsResult(tools=tools)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        link = self._agent_of(ctx)
        meta: Mapping[str, Any] = ctx.meta or {}
        arguments = dict(params.arguments or {})
        if params.name == STATUS_TOOL:
            return await self._status(ctx, link, arguments)
        task = _text(meta.get(META_TASK)) or self.task_id or day_task()
        key = _text(meta.get(META_KEY))
        try:
            name = await self._broker_name(link, params.name)
            if not key and await link.is_write(name):
                key = derived_key(link.agent, task, name, arguments)  # reads need none
            result = await link.client.call(
                name,
                jsonexact.dumps(arguments),
                idempotency_key=key,
                task_id=task,
                intent=_text(meta.get(META_INTENT)),
                wait_for_approval=False,
            )
        except ApprovalPending as waiting:
            return await self._wait(ctx, link, waiting)
        except ToolError as failed:
            return tool_results.tool_failed(failed.result)
        except errors.UnknownTool as exc:
            message = f"Unknown tool: {params.name}: {exc.message}"
            raise MCPError(types.INVALID_PARAMS, message) from None
        except errors.BrokerError as exc:
            if isinstance(exc, errors.ToolNotGranted):
                await self.check_listing(link)  # the client's list may be stale: say so
            return tool_results.refused(exc)
        return tool_results.done(result)

    async def _status(
        self, ctx: ServerRequestContext[Any, Any], link: AgentLink, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        call_id = arguments.get("call_id")
        if not isinstance(call_id, str) or not 0 < len(call_id) <= 128:
            return tool_results.refused(
                errors.InvalidArguments(
                    f'{STATUS_TOOL} takes {{"call_id": "..."}}: the call_id of a '
                    "pending_approval result"
                )
            )
        waiting = ApprovalPending(call_id, "", 0, 0)  # what it waits for: the first Await says
        return await self._wait(ctx, link, waiting, report=False)

    async def _wait(
        self,
        ctx: ServerRequestContext[Any, Any],
        link: AgentLink,
        waiting: ApprovalPending,
        *,
        report: bool = True,
    ) -> types.CallToolResult:
        """Await the human's decision for up to ``approval_wait_s`` (progress between
        Awaits), then the outcome, or ``pending_approval`` while nobody has decided."""
        started = time.monotonic()
        deadline = started + self.approval_wait_s
        progress = 0.0
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 and waiting.expires_at_ms:
                return tool_results.pending(waiting, STATUS_TOOL)
            if report:
                progress = await _progress(ctx, progress, started, self.approval_wait_s, waiting)
            report = True
            try:
                result = await link.client.await_call(
                    waiting.call_id, max(1, min(left_ms, AWAIT_SLICE_MS))
                )
            except ApprovalPending as again:
                waiting = again
                continue
            except ToolError as failed:
                return tool_results.tool_failed(failed.result)
            except errors.BrokerError as exc:
                return tool_results.refused(exc)
            return tool_results.done(result)

    async def _broker_name(self, link: AgentLink, shown: str) -> str:
        name = link.names.broker_name(shown)
        if name is None:
            await link.list_tools()  # a client that calls before it lists (or after a restart)
            link.names.listed(list(link.tools))
            name = link.names.broker_name(shown)
        if name is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {shown}")
        return name

    def _remember_session(self, ctx: ServerRequestContext[Any, Any]) -> None:
        """Handshake-era clients hear of a changed list on their connection; 2026 clients
        through ``subscriptions/listen``."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        request = ctx.request
        key = "stdio"
        if request is not None:
            key = request.headers.get("mcp-session-id") or "http"
        self._legacy[key] = ctx.session
        self._legacy.move_to_end(key)
        while len(self._legacy) > MAX_LEGACY_SESSIONS:
            self._legacy.popitem(last=False)

    async def check_listing(self, link: AgentLink) -> bool:
        """Compare the agent's list with the last one served; tell clients when it changed
        (a policy change, a reload). True when it changed."""
        before = link.listing
        try:
            link.listing = listing_digest(await link.list_tools())
        except errors.BrokerError as exc:
            log.warning("could not list the tools of %s: %s", link.agent, exc)
            return False
        if not before or before == link.listing:
            return False
        log.info("the tools granted to %s changed: telling clients", link.agent)
        await self._bus.publish(ToolsListChanged())
        for session in list(self._legacy.values()):
            try:
                await session.send_tool_list_changed()
            except Exception as exc:  # a gone client must not stop the others
                log.debug("could not tell a client the list changed: %s", exc)
        return True

    async def watch_listings(self, interval_s: float) -> None:
        """Every ``interval_s``, look for a changed tool list (each look is an audited
        ListTools per agent, hence not too often)."""
        while True:
            await asyncio.sleep(interval_s)  # a poll: the broker pushes no policy change
            for link in self._links:
                if link.listing:  # only lists a client has seen can have changed for it
                    await self.check_listing(link)


async def _progress(
    ctx: ServerRequestContext[Any, Any],
    previous: float,
    started: float,
    total: float,
    waiting: ApprovalPending,
) -> float:
    """Tell a client that asked for progress (it gave a token) that the call still waits;
    progress only grows, as the spec asks."""
    progress = max(round(time.monotonic() - started, 3), previous + 0.001)
    note = waiting.note or "waiting for a human to decide"
    await ctx.session.report_progress(progress, total, f"waiting for approval: {note}")
    return progress


def _mcp_tool(tool: pb.ToolInfo, name: str) -> types.Tool:
    write = tool.write
    return types.Tool(
        name=name,
        description=tool.description,
        input_schema=json.loads(tool.arguments_schema_json),
        annotations=types.ToolAnnotations(
            read_only_hint=not write,
            destructive_hint=tool.destructive if write else None,
            idempotent_hint=tool.idempotent if write else None,
            open_world_hint=tool.open_world,
        ),
        meta={"toolbroker/name": tool.name, "toolbroker/needs_approval": tool.needs_approval},
    )


def _status_tool() -> types.Tool:
    return types.Tool(
        name=STATUS_TOOL,
        description=(
            "The outcome of a call that waited for a human approval (a pending_approval "
            "result): waits a while for the decision, then returns the call's result, or "
            "pending_approval again while nobody has decided."
        ),
        input_schema=STATUS_SCHEMA,
        annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
