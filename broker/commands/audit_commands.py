"""``broker audit ...``: query, tail, export, show, prune, fingerprint (and, from
``audit_verify_commands``, verify, checkpoint and key).

They read the broker's database on their own read-only connection (a running broker keeps
writing meanwhile); ``prune`` writes, and signs its anchor with the broker's audit key.
Exit status: 0 when all is well, 1 when verification finds tampering, 2 for a usage problem.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.audit.checkpoints import Signer, audit_key, iso_time
from broker.audit.exported import export_lines
from broker.audit.story import call_story, record_json
from broker.audit.verification import prune
from broker.commands.audit_verify_commands import add_verify_commands
from broker.commands.secret_commands import fingerprint_command
from broker.commands.storage_access import with_audit, with_state
from broker.errors import ConfigError
from broker.settings import BrokerSettings, load_settings
from broker.storage.interfaces import AuditReader
from broker.storage.records import AuditQuery, AuditRow
from broker.units import parse_duration

_FILTERS = {
    "agent": "agent",
    "tool": "tool",
    "task": "task_id",
    "status": "decision",
    "reason": "reason",
    "event": "event",
}


def add_audit_commands(commands: Any) -> None:
    """Register ``broker audit`` and its subcommands."""
    audit = commands.add_parser("audit", help="the audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    add_verify_commands(sub)

    query = sub.add_parser("query", help="records matching filters (a table, or JSONL)")
    _config(query)
    _filters(query)
    query.add_argument("--format", choices=("table", "jsonl"), default="table")
    query.add_argument("--limit", type=int, help="the newest N only")
    query.set_defaults(handler=_query)

    tail = sub.add_parser("tail", help="the newest records; -f keeps following")
    _config(tail)
    _filters(tail)
    tail.add_argument("-n", type=int, default=20, help="how many to show first (default 20)")
    tail.add_argument("-f", "--follow", action="store_true")
    tail.add_argument("--format", choices=("table", "jsonl"), default="table")
    tail.add_argument("--for", dest="duration", help="stop following after this (e.g. 10s)")
    tail.set_defaults(handler=_tail)

    export = sub.add_parser("export", help="every record, one JSON object a line")
    _config(export)
    _filters(export)
    export.add_argument(
        "--format",
        choices=("jsonl", "chain"),
        default="jsonl",
        help="jsonl: readable records; chain: the whole trail as hashed, for `verify --export`",
    )
    export.set_defaults(handler=_export)

    show = sub.add_parser("show", help="the whole story of one call")
    _config(show)
    show.add_argument("call_id")
    show.set_defaults(handler=_show)

    cut = sub.add_parser("prune", help="remove old records, keeping a signed anchor at the cut")
    _config(cut)
    cut.add_argument("--before", required=True, help="a date (2026-11-01) or a time")
    cut.set_defaults(handler=_prune)

    fingerprint = sub.add_parser(
        "fingerprint", help="was this value used? (value from stdin; the calls that used it)"
    )
    _config(fingerprint)
    fingerprint.set_defaults(handler=fingerprint_command)


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the broker's config")


def _filters(parser: argparse.ArgumentParser) -> None:
    for flag in _FILTERS:
        parser.add_argument(f"--{flag}")
    parser.add_argument("--since", help="a date, a time, or a span back from now (24h)")
    parser.add_argument("--until", help="a date, a time, or a span back from now")


def _settings(args: argparse.Namespace) -> BrokerSettings:
    return load_settings(args.config)


def _when(text: str | None) -> int | None:
    """Milliseconds: an ISO date or time (UTC unless it says), or a span back from now."""
    if text is None:
        return None
    if re.fullmatch(r"\d+(\.\d+)?(ms|s|m|h|d)", text.strip()):
        return int((time.time() - parse_duration(text)) * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(text, "not a time: write 2026-11-25, 2026-11-25T08:00 or 24h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _rows(args: argparse.Namespace, **extra: Any) -> list[AuditRow]:
    equals = {
        column: getattr(args, flag)
        for flag, column in _FILTERS.items()
        if getattr(args, flag, None)
    }
    query = AuditQuery(equals, since_ms=_when(args.since), until_ms=_when(args.until), **extra)
    return with_audit(_settings(args), lambda audit: audit.query(query))


def _table_line(row: AuditRow) -> str:
    status = f" {row.upstream_status}" if row.upstream_status else ""
    reason = f" {row.reason}" if row.reason else ""
    return (
        f"{row.seq:>7} {iso_time(row.ts_ms)} {row.call_id} {row.event or row.rpc:9} "
        f"{row.agent or '-':16} {row.tool or '-':24} {row.decision}{reason}{status} "
        f"{row.latency_us / 1000:.1f}ms"
    )


def _print(rows: list[AuditRow], form: str) -> None:
    for row in rows:
        print(record_json(row) if form == "jsonl" else _table_line(row))


def _query(args: argparse.Namespace) -> int:
    rows = _rows(args, limit=args.limit, newest=args.limit is not None)
    _print(rows, args.format)
    print(f"{len(rows)} record(s)", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.format == "chain":
        return _export_chain(args)
    for row in _rows(args):
        sys.stdout.write(record_json(row) + "\n")
    return 0


def _export_chain(args: argparse.Namespace) -> int:
    if any(getattr(args, flag, None) for flag in (*_FILTERS, "since", "until")):
        raise ConfigError("--format chain", "a chain export is the whole trail: drop the filters")
    settings = load_settings(args.config)

    async def write(reader: AuditReader) -> None:
        async for line in export_lines(reader, settings.broker_id):
            sys.stdout.write(line + "\n")

    with_audit(_settings(args), write)
    return 0


def _tail(args: argparse.Namespace) -> int:
    rows = _rows(args, limit=args.n, newest=True)
    _print(rows, args.format)
    sys.stdout.flush()
    last = rows[-1].seq if rows else 0
    stop = time.monotonic() + parse_duration(args.duration) if args.duration else None
    while args.follow and (stop is None or time.monotonic() < stop):
        time.sleep(0.5)  # polling the database; the broker owns the writes
        fresh = _rows(args, after_seq=last)
        _print(fresh, args.format)
        sys.stdout.flush()
        if fresh:
            last = fresh[-1].seq
    return 0


def _show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rows = with_audit(settings, lambda audit: audit.query(AuditQuery({"call_id": args.call_id})))
    record = with_state(settings, lambda state: state.calls.get(args.call_id))
    if not rows and record is None:
        raise ConfigError(args.call_id, "no such call in the audit trail")
    story = call_story(args.call_id, rows, record)
    print(f"call {story.call_id}")
    facts = dict(story.facts)
    if "agent" in facts:
        print(f"  agent {facts['agent']}, tool {facts['tool']}, task {facts['task']}")
    for name, value in story.facts:
        if name not in ("agent", "tool", "task"):
            print(f"  {name}: {value}")
    print("  steps:")
    for step in story.steps:
        print(
            f"    {iso_time(step.ts_ms)} #{step.seq} {step.what}: {step.decision}"
            + (f" - {'; '.join(step.facts)}" if step.facts else "")
            + (f" ({step.latency_ms:.1f} ms)" if step.latency_ms else "")
        )
    return 0


def _prune(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    before = _when(args.before)
    assert before is not None
    signer = Signer(audit_key(settings), settings.broker_id)
    removed, anchor = with_audit(_settings(args), lambda audit: prune(audit, before, signer))
    if anchor is None:
        print("nothing older than that", file=sys.stderr)
        return 0
    with_state(settings, lambda state: state.heads.add(anchor.row()))  # the cut kept there too
    print(
        f"removed {removed} record(s); signed anchor at record {anchor.seq} "
        f"(head {anchor.head_hash[:16]}): what remains still verifies",
        file=sys.stderr,
    )
    return 0
