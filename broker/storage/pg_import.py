"""Moving a broker from SQLite to PostgreSQL: ``broker migrate --from-sqlite``.

Everything the data directory holds is copied as it is: the state (broker.db: calls, freezes,
budgets, taint, outside text, secrets still encrypted under the same master key, the kept audit
heads) and the trail (audit.db: records with their hashes, and the signed checkpoints), in one
transaction, so a copy that fails leaves the target as it was. The chain then goes on where it
ended: the head row is set to the last record and the checkpoint schedule to the last
checkpoint, and ``broker audit verify`` checks the copied chain like any other.

It refuses a target that already holds calls or audit records (two histories are not merged)
and a source newer than this broker knows. Columns are matched by name; a column PostgreSQL
keeps as bytes (outside values and text) gets the UTF-8 of SQLite's text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from broker.storage.pg_audit_ledger import SELECT_CHECKPOINTS
from broker.storage.pg_changes import CHANNEL, RESYNC
from broker.storage.pg_connection import CONNECT_TIMEOUT_S, error_text
from broker.storage.records import StoreError
from broker.storage.sqlite_connection import read_only
from broker.storage.urls import redacted

BATCH = 5_000  # rows read and written at a time: a large trail never sits in memory whole
# (SQLite file, table) in copying order; outside_text and audit_heads get new identities
TABLES = (
    ("broker.db", "calls"),
    ("broker.db", "freezes"),
    ("broker.db", "budgets"),
    ("broker.db", "taint"),
    ("broker.db", "outside_text"),
    ("broker.db", "secrets"),
    ("broker.db", "audit_heads"),
    ("audit.db", "audit"),
    ("audit.db", "audit_checkpoints"),
)
_IDENTITIES = {"outside_text": "id", "audit_heads": "id"}  # PostgreSQL numbers these itself
# tables whose order means something (the chain; what was kept first)
_ORDER = {
    "audit": "ORDER BY seq",
    "audit_checkpoints": "ORDER BY seq",
    "outside_text": "ORDER BY id",
    "audit_heads": "ORDER BY id",
}


class Copied(NamedTuple):
    """How many rows of one table were copied."""

    table: str
    rows: int


def import_sqlite(data_dir: Path, url: str) -> list[Copied]:
    """Copy the SQLite state and trail in ``data_dir`` into the (migrated) database at
    ``url``, in one transaction; StoreError saying why it cannot."""
    for name in {file for file, _ in TABLES}:
        if not (data_dir / name).exists():
            raise StoreError(f"no {name} in {data_dir}: nothing to migrate from")
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(CONNECT_TIMEOUT_S))) as target:
            with target.transaction():
                _refuse_a_used_target(target)
                copied = [
                    Copied(table, _copy(data_dir / file, table, target)) for file, table in TABLES
                ]
                _continue_the_chain(target)
                target.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{RESYNC}:"))
            return copied
    except psycopg.Error as exc:
        raise StoreError(f"migrating into {redacted(url)} failed: {error_text(exc)}") from None
    except sqlite3.Error as exc:
        raise StoreError(f"reading {data_dir} failed: {exc}") from None


def _refuse_a_used_target(target: psycopg.Connection[Any]) -> None:
    for table in ("calls", "audit"):
        row = target.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()  # noqa: S608
        if row and row[0]:
            raise StoreError(
                f"the target database already holds {table}: migrate into an empty one "
                "(two histories are not merged)"
            )


def _copy(source: Path, table: str, target: psycopg.Connection[Any]) -> int:
    kinds = _target_columns(target, table)
    with read_only(source) as conn:
        present = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        columns = [c for c in present if c in kinds and c != _IDENTITIES.get(table)]
        missing = set(kinds) - set(present) - {_IDENTITIES.get(table)}
        if any(kinds[c] == "required" for c in missing):
            raise StoreError(f"{source.name} is older than this broker knows: start it once first")
        order = _ORDER.get(table, "")
        select = f"SELECT {', '.join(columns)} FROM {table} {order}"  # noqa: S608
        insert = (
            f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(columns))})"
        )
        as_bytes = [kinds[c] == "bytea" for c in columns]
        total = 0
        for chunk in _chunks(conn.execute(select)):
            rows = [_converted(row, as_bytes) for row in chunk]
            with target.cursor() as cursor:
                cursor.executemany(insert, rows)
            total += len(rows)
    return total


def _target_columns(target: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """Column -> bytea, required (no default) or optional."""
    rows = target.execute(
        "SELECT column_name, data_type, is_nullable, column_default FROM "
        "information_schema.columns WHERE table_name = %s AND table_schema = current_schema()",
        (table,),
    ).fetchall()
    kinds = {}
    for name, kind, nullable, default in rows:
        if kind == "bytea":
            kinds[name] = "bytea"
        else:
            kinds[name] = "required" if nullable == "NO" and default is None else "optional"
    return kinds


def _chunks(cursor: sqlite3.Cursor) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := cursor.fetchmany(BATCH):
        yield chunk


def _converted(row: tuple[Any, ...], as_bytes: list[bool]) -> tuple[Any, ...]:
    return tuple(
        value.encode() if wanted and isinstance(value, str) else value
        for value, wanted in zip(row, as_bytes, strict=True)
    )


def _continue_the_chain(target: psycopg.Connection[Any]) -> None:
    """The shared chain's head row, where the copied chain ends."""
    last = target.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    mark = target.execute(SELECT_CHECKPOINTS + "ORDER BY seq DESC LIMIT 1").fetchone()
    seq, head = (int(last[0]), str(last[1])) if last else (0, "")
    if mark is not None and int(mark[0]) > seq:  # everything was pruned: on from the anchor
        seq, head = int(mark[0]), str(mark[1])
    since = seq - (int(mark[0]) if mark else 0)
    target.execute(
        "UPDATE audit_chain SET seq = %s, head = %s, since_checkpoint = %s, "
        "last_checkpoint_ms = COALESCE(%s, last_checkpoint_ms) WHERE id = 1",
        (seq, head, since, int(mark[2]) if mark else None),
    )
