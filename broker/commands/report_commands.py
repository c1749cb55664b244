"""``broker report daily``: which agent is burning what, before the bill does."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from broker.commands.storage_access import with_audit, with_state
from broker.digest import daily, render
from broker.errors import ConfigError
from broker.policy.check import check_folders
from broker.settings import BrokerSettings, load_settings
from broker.vault import SecretBox, load_master_key


def add_report_commands(commands: Any) -> None:
    """Register ``broker report daily``."""
    report = commands.add_parser("report", help="digests of what agents did")
    sub = report.add_subparsers(dest="report_command", required=True)
    day = sub.add_parser("daily", help="per agent: calls, refusals, approvals, cost, anomalies")
    day.add_argument("--config", type=Path, required=True)
    day.add_argument("--date", help="a UTC day, 2026-11-24 (default: yesterday)")
    day.add_argument("--format", choices=("text", "markdown"), default="text")
    day.add_argument("--post", action="store_true", help="also post it to the Slack channel")
    day.set_defaults(handler=_daily)


def _daily(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        day = (
            date.fromisoformat(args.date)
            if args.date
            else (datetime.now(UTC).date() - timedelta(days=1))
        )
    except ValueError:
        raise ConfigError(args.date, "not a date: write 2026-11-24") from None
    files = check_folders(settings.policies, settings.tools)
    policies = {policy.agent: policy for policy in files.policies}
    report = with_audit(settings, lambda audit: daily(audit, day, policies))
    text = render(report, day, markdown=args.format == "markdown" or args.post)
    print(text)
    if args.post:
        _post(settings, text)
    return 0


def _post(settings: BrokerSettings, text: str) -> None:
    if settings.slack is None:
        raise ConfigError("slack", "the config has no slack section to post to")
    key = load_master_key(settings, os.environ)
    if key is None:
        raise ConfigError(
            "BROKER_MASTER_KEY", "the bot token is in the secret store: give the master key to post"
        )
    rows = {row.name: row for row in with_state(settings, lambda state: state.secrets.rows())}
    row = rows.get(settings.slack.bot_token_secret)
    if row is None:
        raise ConfigError(settings.slack.bot_token_secret, "the bot token is not set")
    token = SecretBox(key).open(row).decode()
    answer = httpx.post(
        f"{settings.slack.api_url}chat.postMessage",
        timeout=10,
        headers={"Authorization": f"Bearer {token}"},
        json={"channel": settings.slack.channel, "text": text},
    )
    if not answer.json().get("ok"):
        raise ConfigError("slack", f"Slack refused the post: {answer.json().get('error')}")
    print("posted to Slack", file=sys.stderr)
