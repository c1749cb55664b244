"""``broker secrets set|rotate|list|delete``, and the fingerprint that ``broker audit
fingerprint`` prints.

Values come from stdin or a prompt, never from argv (argv shows in ``ps`` and shell history).
These commands open the broker's database themselves; a running broker sees the change on its
next call that needs the secret.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.commands.storage_access import with_audit, with_state
from broker.errors import ConfigError
from broker.policy.model import SECRET_NAME
from broker.redactor import MIN_SECRET_LENGTH
from broker.settings import load_settings
from broker.storage.interfaces import AuditReader
from broker.storage.records import AuditQuery, AuditRow
from broker.vault import SecretBox, load_master_key


def add_secret_commands(commands: Any) -> None:
    """Register ``broker secrets`` and ``broker audit fingerprint``."""
    secrets = commands.add_parser("secrets", help="the broker's encrypted secrets")
    sub = secrets.add_subparsers(dest="secrets_command", required=True)
    for name, help_text in (
        ("set", "store a new secret (value from stdin or a prompt)"),
        ("rotate", "give an existing secret a new value (stdin or a prompt)"),
        ("delete", "remove a secret"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("name")
        command.add_argument("--config", type=Path, required=True)
        command.set_defaults(handler=_HANDLERS[name])
    listing = sub.add_parser("list", help="names and dates, never values")
    listing.add_argument("--config", type=Path, required=True)
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(handler=_list)


def _box(args: argparse.Namespace) -> tuple[SecretBox, Any]:
    settings = load_settings(args.config)
    key = load_master_key(settings, os.environ)
    if key is None:
        raise ConfigError(
            str(args.config),
            "no master key: set BROKER_MASTER_KEY or master_key_file in the config",
        )
    return SecretBox(key), settings


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name}: ")
        if getpass.getpass("again: ") != value:
            raise ConfigError(name, "the two entries differ; nothing was stored")
    else:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(name, f"a secret has at least {MIN_SECRET_LENGTH} characters")
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(name, "a secret is one line: no line breaks or NUL bytes")
    return value


def _put(args: argparse.Namespace, *, replace: bool) -> int:
    if not re.match(SECRET_NAME, args.name):
        raise ConfigError(args.name, "secret names are lower-case letters, digits, . _ and -")
    box, settings = _box(args)
    value = _read_value(args.name)
    nonce, ciphertext = box.seal(args.name, value.encode())
    now = int(time.time() * 1000)
    done = with_state(
        settings,
        lambda state: state.secrets.put(args.name, nonce, ciphertext, now, replace=replace),
    )
    if not done:
        hint = "use: broker secrets set" if replace else "use: broker secrets rotate"
        state = "no secret" if replace else "a secret"
        raise ConfigError(args.name, f"there is {state} with this name; {hint}")
    verb = "rotated" if replace else "stored"
    print(
        f"{verb} {args.name} (fingerprint {box.fingerprint(value.encode())[:16]})", file=sys.stderr
    )
    return 0


def _set(args: argparse.Namespace) -> int:
    return _put(args, replace=False)


def _rotate(args: argparse.Namespace) -> int:
    return _put(args, replace=True)


def _delete(args: argparse.Namespace) -> int:
    if not with_state(load_settings(args.config), lambda state: state.secrets.delete(args.name)):
        raise ConfigError(args.name, "there is no secret with this name")
    print(f"deleted {args.name}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = with_state(load_settings(args.config), lambda state: state.secrets.rows())
    entries = [
        {
            "name": r.name,
            "created": _when(r.created_ms),
            "updated": _when(r.updated_ms),
            "last_used": _when(r.last_used_ms),
        }
        for r in rows
    ]
    if args.format == "json":
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        print(
            f"{entry['name']:32} created {entry['created']}  updated {entry['updated']}  "
            f"last used {entry['last_used'] or 'never'}"
        )
    return 0


def _when(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _all_or_none(audit: AuditReader) -> list[AuditRow]:
    """Every record, or none where the broker has not run yet."""
    return await audit.query(AuditQuery()) if await audit.present() else []


def fingerprint_command(args: argparse.Namespace) -> int:
    """``broker audit fingerprint``: the value's fingerprint, and the calls that used it."""
    box, settings = _box(args)
    value = _read_value("value")
    fingerprint = box.fingerprint(value.encode())
    print(f"fingerprint {fingerprint}")
    rows = with_audit(settings, _all_or_none, required=False)
    used = [row for row in rows if fingerprint in row.detail]
    for row in used:
        print(f"used by call {row.call_id} ({row.agent} {row.tool} at {_when(row.ts_ms)})")
    if not used:
        print("no audited call used this value")
    return 0


_HANDLERS = {"set": _set, "rotate": _rotate, "delete": _delete}
