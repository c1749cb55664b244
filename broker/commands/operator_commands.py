"""``broker approvals list``, ``broker approve``, ``broker deny``, ``broker freeze`` and
``broker unfreeze``: the admin service, signed with the broker's local admin key (or --key)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.approvals.admin import admin_key_path
from broker.client import AdminClient
from broker.errors import ConfigError
from broker.settings import load_settings
from broker.signing import AgentCredentials


def add_admin_commands(commands: Any) -> None:
    """Register the operators' commands."""
    approvals = commands.add_parser("approvals", help="calls waiting for a human")
    sub = approvals.add_subparsers(dest="approvals_command", required=True)
    listing = sub.add_parser("list", help="pending calls (and outcomes to reconcile)")
    _options(listing)
    listing.add_argument("--all", action="store_true", help="also those decided in 24 h")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(handler=_list)

    for name, approve in (("approve", True), ("deny", False)):
        command = commands.add_parser(name, help=f"{name} a pending call")
        command.add_argument("call_id")
        command.add_argument(
            "--reason",
            default="",
            required=not approve,
            help="why (shown to the agent and audited)",
        )
        _options(command)
        command.set_defaults(handler=_decide, approve=approve)

    reconcile = commands.add_parser(
        "reconcile", help="record what you found about a write whose outcome was lost"
    )
    reconcile.add_argument("call_id")
    reconcile.add_argument("--note", required=True, help="what the tool shows happened")
    _options(reconcile)
    reconcile.set_defaults(handler=_reconcile)

    for name in ("freeze", "unfreeze"):
        command = commands.add_parser(name, help=f"{name} an agent, or every agent (--all)")
        command.add_argument("agent", nargs="?", default="")
        command.add_argument("--all", action="store_true", help="every agent")
        command.add_argument("--reason", default="", help="why (audited)")
        _options(command)
        command.set_defaults(handler=_freeze, freeze=name == "freeze")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the broker's config")
    parser.add_argument("--key", type=Path, help="admin key file (default: data_dir/admin.key)")
    parser.add_argument("--timeout", type=float, default=30.0)


def _client(args: argparse.Namespace) -> AdminClient:
    settings = load_settings(args.config)
    key = args.key or admin_key_path(settings)
    if not key.exists():
        raise ConfigError(
            str(key), "no admin key here; start the broker once (it makes one) or pass --key"
        )
    try:
        credentials = AgentCredentials.load(key)
    except ValueError as exc:
        raise ConfigError(str(key), str(exc).split(": ", 1)[-1]) from None
    return AdminClient(
        settings.listen, credentials, broker_id=settings.broker_id, timeout=args.timeout
    )


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        calls = client.list_approvals(include_decided=args.all)
    if args.format == "json":
        print(
            json.dumps(
                [
                    {
                        "call_id": c.call_id,
                        "agent": c.agent,
                        "tool": c.tool,
                        "state": c.state,
                        "arguments": json.loads(c.arguments_json),
                        "intent": c.intent,
                        "why": c.why,
                        "decided_by": c.decided_by,
                        "expires_at_ms": c.expires_at_ms,
                    }
                    for c in calls
                ],
                indent=2,
            )
        )
        return 0
    if not calls:
        print("nothing waits for a decision", file=sys.stderr)
    for c in calls:
        why = json.loads(c.why).get("message", "") if c.why else ""
        print(f"{c.call_id}  {c.state:15} {c.agent} {c.tool}  {c.arguments_json}")
        print(f"    intent: {c.intent or '-'}; why: {why or '-'}; expires {_when(c.expires_at_ms)}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(client.decide(args.call_id, args.approve, args.reason))
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(client.reconcile(args.call_id, args.note))
    return 0


def _freeze(args: argparse.Namespace) -> int:
    if bool(args.agent) == bool(args.all):
        raise ConfigError(args.agent or "--all", "name one agent, or give --all")
    with _client(args) as client:
        act = client.freeze if args.freeze else client.unfreeze
        print(act(args.agent, everyone=args.all, reason=args.reason))
    return 0


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ms else "-"
