"""``broker console login --user NAME``: a one-time sign-in link to the web console.

The link is signed with the console's key (the same file the broker reads), bound to one
configured operator, short-lived (``console.link_ttl``) and good for one sign-in. Making it
needs read access to that key, like the admin key: whoever can read the broker's data
directory can already act as an operator.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from broker.console.tokens import ConsoleTokens
from broker.errors import ConfigError
from broker.settings import BrokerSettings, load_settings
from broker.signing import now_ms


def add_console_command(commands: Any) -> None:
    """Register ``broker console``."""
    console = commands.add_parser("console", help="the web console for approvers and operators")
    sub = console.add_subparsers(dest="console_command", required=True)
    login = sub.add_parser("login", help="print a one-time sign-in link for an operator")
    login.add_argument("--config", type=Path, required=True, help="the broker's config")
    login.add_argument("--user", required=True, help="an operator named in console.operators")
    login.set_defaults(handler=_login)


def sign_in_link(settings: BrokerSettings, user: str) -> str:
    """A fresh one-time link for ``user``; ConfigError when the console is off or the user is
    not an operator."""
    console = settings.console
    if console is None:
        raise ConfigError("console", "the console is off: add a console section to the config")
    names = [operator.name for operator in console.operators]
    if user not in names:
        raise ConfigError(
            user, f"not an operator of the console; console.operators names {', '.join(names)}"
        )
    token = ConsoleTokens.of(settings).issue("link", user, console.link_ttl, now_ms())
    return f"{settings.console_url}/console/login?token={token}"


def _login(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    link = sign_in_link(settings, args.user)
    assert settings.console is not None
    minutes = settings.console.link_ttl / 60
    print(link)
    print(f"Open it within {minutes:g} minute(s); it signs {args.user} in once.", file=sys.stderr)
    return 0
