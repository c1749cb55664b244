"""``broker mcp``: the broker's tools for MCP clients, over stdio or streamable HTTP.

stdio (the default) serves one agent to the client that started the process; its log goes to
stderr only, since stdout carries the protocol. ``--http HOST:PORT`` serves one or more
agents (``--agent``/``--key`` pairs), each client authenticated by its agent's bearer token
(``broker.mcp_front.http_front``).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from broker.mcp_front.names import STYLES


def add_mcp_command(commands: Any) -> None:
    """Register ``broker mcp``."""
    mcp = commands.add_parser(
        "mcp", help="serve the broker's tools to MCP clients (stdio, or streamable HTTP)"
    )
    mcp.add_argument("--config", type=Path, help="the broker's config (address, id, secrets)")
    mcp.add_argument(
        "--agent", action="append", required=True, help="agent id (repeat with --http)"
    )
    mcp.add_argument("--key", type=Path, action="append", required=True, help="its key file")
    mcp.add_argument("--target", help="broker address (default: the config's, or 127.0.0.1:50051)")
    mcp.add_argument("--broker-id", default="", help="the broker's id (default: the config's)")
    mcp.add_argument(
        "--http", metavar="[HOST:]PORT", help="serve streamable HTTP (host 127.0.0.1), not stdio"
    )
    mcp.add_argument("--task", default="", help="task id of the calls (default: one per UTC day)")
    mcp.add_argument(
        "--approval-wait",
        type=float,
        default=45.0,
        help="seconds a call waits inline for a human before it answers pending_approval",
    )
    mcp.add_argument("--tool-names", choices=STYLES, default="dotted", help="tool.action or _")
    mcp.add_argument(
        "--tools-poll",
        type=float,
        default=30.0,
        help="seconds between looks for a changed tool list (0: never)",
    )
    mcp.add_argument("--allowed-host", action="append", default=[], help="extra Host (HTTP)")
    mcp.add_argument("--allowed-origin", action="append", default=[], help="extra Origin")
    mcp.add_argument("--timeout", type=float, default=30.0, help="seconds per broker RPC")
    mcp.set_defaults(handler=_mcp)


def _mcp(args: argparse.Namespace) -> int:
    # loaded here, not at the top: the MCP SDK costs every other command ~0.5 s to import
    serving = importlib.import_module("broker.mcp_front.serving")
    code: int = serving.run(args)
    return code
