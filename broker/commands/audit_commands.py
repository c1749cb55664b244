"""``broker audit ...``: verify, checkpoint, query, tail, export, show, prune, fingerprint.

They read the broker's database on their own read-only connection (a running broker keeps
writing meanwhile); ``prune`` writes, and signs its anchor with the broker's audit key.
Exit status: 0 when all is well, 1 when verification finds tampering, 2 for a usage problem.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.checkpoints import Checkpoint, Signer, audit_key, audit_key_path
from broker.audit.verification import checkpoints, prune, verify
from broker.commands.secret_commands import fingerprint_command
from broker.commands.storage_access import with_audit, with_state
from broker.errors import ConfigError
from broker.settings import load_settings
from broker.signing import AgentCredentials
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

    check = sub.add_parser("verify", help="check the hash chain and the signed checkpoints")
    _config(check)
    check.add_argument(
        "--checkpoint",
        type=Path,
        help="a checkpoint kept elsewhere (the JSON `audit checkpoint` printed)",
    )
    check.set_defaults(handler=_verify)

    point = sub.add_parser("checkpoint", help="the latest signed checkpoint, to keep elsewhere")
    _config(point)
    point.set_defaults(handler=_checkpoint)

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
    export.add_argument("--format", choices=("jsonl",), default="jsonl")
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


def _database(args: argparse.Namespace) -> Path:
    database = load_settings(args.config).database
    if not database.exists():
        raise ConfigError(str(database), "no audit database here (has the broker run?)")
    return database


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
    return with_audit(_database(args), lambda audit: audit.query(query))


def record_json(row: AuditRow) -> str:
    """One record as a JSON line (its detail parsed, its time readable)."""
    data = row._asdict()
    data["time"] = _iso(row.ts_ms)
    data["detail"] = json.loads(row.detail) if row.detail else {}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _table_line(row: AuditRow) -> str:
    status = f" {row.upstream_status}" if row.upstream_status else ""
    reason = f" {row.reason}" if row.reason else ""
    return (
        f"{row.seq:>7} {_iso(row.ts_ms)} {row.call_id} {row.event or row.rpc:9} "
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
    for row in _rows(args):
        sys.stdout.write(record_json(row) + "\n")
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
    database = _database(args)
    rows = with_audit(database, lambda audit: audit.query(AuditQuery({"call_id": args.call_id})))
    record = with_state(load_settings(args.config), lambda state: state.calls.get(args.call_id))
    if not rows and record is None:
        raise ConfigError(args.call_id, "no such call in the audit trail")
    first = rows[0] if rows else None
    print(f"call {args.call_id}")
    if first is not None:
        print(
            f"  agent {first.agent} (key {first.key_id or '-'}), tool {first.tool}, "
            f"task {first.task_id or '-'}"
        )
        print(f"  intent: {first.intent or '-'}")
        print(f"  arguments: {first.arguments or '(not recorded: too large)'}")
        print(f"  policy set: {first.policy_hash[:16]}")
    if record is not None:
        why = json.loads(record.why) if record.why else {}
        print(
            f"  stored call: {record.state}"
            + (f", decided by {record.decided_by}" if record.decided_by else "")
            + (f" ({record.note})" if record.note else "")
        )
        if why.get("message"):
            print(f"  why a human was asked: {why['message']}")
    print("  steps:")
    for row in rows:
        detail = json.loads(row.detail) if row.detail else {}
        facts = []
        if row.reason:
            facts.append(row.reason)
        if row.upstream_status:
            facts.append(f"upstream {row.upstream_status}")
        if row.result_size:
            facts.append(f"result {row.result_size} bytes sha256 {row.result_digest[:12]}")
        if row.cost:
            facts.append(f"cost {row.cost}")
        if detail.get("by"):
            facts.append(f"by {detail['by']}")
        if detail.get("message"):
            facts.append(str(detail["message"]))
        for finding in detail.get("findings", []):
            facts.append(f"finding {finding['kind']} at {finding['path']}: {finding['detail']}")
        print(
            f"    {_iso(row.ts_ms)} #{row.seq} {row.event or row.rpc}: {row.decision}"
            + (f" - {'; '.join(facts)}" if facts else "")
            + (f" ({row.latency_us / 1000:.1f} ms)" if row.latency_us else "")
        )
    return 0


def _public_key(args: argparse.Namespace) -> tuple[Ed25519PublicKey, str]:
    settings = load_settings(args.config)
    path = audit_key_path(settings.data_dir)
    if not path.exists():
        raise ConfigError(str(path), "no audit key here: has the broker run on this data_dir?")
    credentials = AgentCredentials.load(path)
    return credentials.private_key.public_key(), credentials.public_key_b64


def _verify(args: argparse.Namespace) -> int:
    public_key, _ = _public_key(args)
    external = None
    if args.checkpoint:
        try:
            data = json.loads(args.checkpoint.read_text())
            external = Checkpoint(
                int(data["seq"]),
                data["head_hash"],
                int(data["ts_ms"]),
                data["kind"],
                data["key_id"],
                data["signature"],
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(str(args.checkpoint), f"not a checkpoint: {exc}") from None
    verdict = with_audit(_database(args), lambda audit: verify(audit, public_key, external))
    if verdict.ok:
        print(
            f"ok: {verdict.records} record(s) chained, {verdict.checkpoints} signed "
            "checkpoint(s) hold"
        )
        return 0
    print(f"TAMPERED: {verdict.problem}")
    return 1


def _checkpoint(args: argparse.Namespace) -> int:
    _, public = _public_key(args)
    marks = with_audit(_database(args), checkpoints)
    if not marks:
        raise ConfigError(
            str(args.config),
            "no checkpoint yet: the broker signs one every "
            "1,000 records or audit_checkpoint_interval",
        )
    latest = marks[-1]
    print(
        json.dumps({**asdict(latest), "time": _iso(latest.ts_ms), "public_key": public}, indent=2)
    )
    return 0


def _prune(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    before = _when(args.before)
    assert before is not None
    signer = Signer(audit_key(settings.data_dir))
    removed, anchor = with_audit(_database(args), lambda audit: prune(audit, before, signer))
    if anchor is None:
        print("nothing older than that", file=sys.stderr)
        return 0
    print(
        f"removed {removed} record(s); signed anchor at record {anchor.seq} "
        f"(head {anchor.head_hash[:16]}): what remains still verifies",
        file=sys.stderr,
    )
    return 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
