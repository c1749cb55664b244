"""The audit trail in ``audit.db``, read by the broker at start and by the command line, and
pruned. Reads are on a read-only connection of their own (the audit writer keeps writing
meanwhile), on a helper thread; a missing database is a StoreError that says so."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

from broker.storage.audit_ledger import INSERT_CHECKPOINT, SELECT_CHECKPOINTS, checkpoint_values
from broker.storage.audit_sql import SELECT_RECORDS, audit_query_sql
from broker.storage.interfaces import Sign
from broker.storage.records import (
    AUDIT_COLUMNS,
    STEP_EVENTS,
    Attempt,
    AuditQuery,
    AuditRow,
    CheckpointRow,
    StoreError,
)
from broker.storage.sqlite_connection import (
    Reads,
    no_database,
    read_only,
    rollback,
)
from broker.storage.sqlite_schema import audit_database, prepare_audit_database

_CHECKPOINTS = SELECT_CHECKPOINTS + "ORDER BY seq"
CHAIN_CHUNK = 2_000  # records read at a time by a verify
# A prune waits this long for the audit writer, which holds its lock for milliseconds at a
# time, before it gives up and says the database is locked.
PRUNE_BUSY_TIMEOUT_S = 2.0
# Records removed in one transaction: the writer waits for the lock at most that long (a few
# ms of deleting), however old the trail is.
PRUNE_BATCH = 5_000


class SqliteAuditReader:
    """The AuditReader of the SQLite backend, for the audit database beside ``database``
    (broker.db, or audit.db itself)."""

    def __init__(self, database: Path) -> None:
        self.path = audit_database(database)
        self._reads = Reads(self.path)

    async def prepare(self) -> None:
        """Create or migrate audit.db."""
        try:
            await asyncio.to_thread(prepare_audit_database, self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the audit database {self.path}: {exc}") from None

    async def present(self) -> bool:
        """Whether audit.db exists."""
        return self.path.exists()

    async def query(self, query: AuditQuery) -> list[AuditRow]:
        """Records matching ``query``, in chain order."""
        sql, params = audit_query_sql(query, "?")
        rows = await self._reads.run(lambda c: [AuditRow(*r) for r in c.execute(sql, params)])
        return rows[::-1] if query.newest else rows

    async def chain(self, from_seq: int) -> AsyncIterator[tuple[Any, ...]]:
        """Every record from ``from_seq`` on, in chain order, a chunk at a time."""
        while True:
            chunk = await self._reads.run(partial(_chunk, from_seq=from_seq))
            for row in chunk:
                yield row
            if len(chunk) < CHAIN_CHUNK:
                return
            from_seq = int(chunk[-1][AUDIT_COLUMNS.index("seq")]) + 1

    async def checkpoints(self) -> list[CheckpointRow]:
        """Every signed checkpoint, oldest first."""
        rows = await self._reads.run(lambda c: c.execute(_CHECKPOINTS).fetchall())
        return [CheckpointRow(*row) for row in rows]

    async def recent_nonces(self, since_ms: int) -> dict[str, int]:
        """Accepted nonces recorded at or after ``since_ms``, with when they were recorded."""
        sql = "SELECT nonce, ts_ms FROM audit WHERE ts_ms >= ? AND nonce != ''"
        return dict(await self._reads.run(lambda c: c.execute(sql, (since_ms,)).fetchall()))

    async def attempts(self, since_ms: int) -> list[Attempt]:
        """The final records of calls since ``since_ms`` (not their steps, not replays)."""
        sql = (
            "SELECT ts_ms, agent, tool, args_digest, decision, reason FROM audit "
            "WHERE ts_ms >= ? AND rpc = 'call' AND agent != '' "
            "AND event NOT IN (?, ?, 'replayed') ORDER BY seq"
        )
        params = (since_ms, *STEP_EVENTS)
        return await self._reads.run(lambda c: [Attempt(*r) for r in c.execute(sql, params)])

    async def prune(self, before_ms: int, sign: Sign) -> tuple[int, CheckpointRow | None]:
        """Delete what is older than ``before_ms``, leaving a signed anchor at the cut."""
        return await asyncio.to_thread(_prune, self.path, before_ms, sign)

    async def close(self) -> None:
        """Close the connection and its thread."""
        await asyncio.to_thread(self._reads.close)


def _chunk(conn: sqlite3.Connection, *, from_seq: int) -> list[tuple[Any, ...]]:
    sql = SELECT_RECORDS + "WHERE seq >= ? ORDER BY seq LIMIT ?"
    return conn.execute(sql, (from_seq, CHAIN_CHUNK)).fetchall()


def read_audit_rows(database: Path, call_id: str | None = None) -> list[AuditRow]:
    """Every record (or one call's) in chain order, on a connection of its own: for tools and
    tests outside an event loop."""
    where, params = ("WHERE call_id = ?", (call_id,)) if call_id else ("", ())
    with read_only(audit_database(database)) as conn:
        return [
            AuditRow(*row) for row in conn.execute(SELECT_RECORDS + where + " ORDER BY seq", params)
        ]


def _prune(path: Path, before_ms: int, sign: Sign) -> tuple[int, CheckpointRow | None]:
    """Prune in batches of PRUNE_BATCH records, each its own short transaction that leaves a
    signed anchor at its cut: the audit writer never waits long for the lock, and the trail
    verifies between batches (and if a prune stops half way)."""
    if not path.exists():  # connecting would make an empty one
        raise no_database(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=PRUNE_BUSY_TIMEOUT_S)
    removed, anchor = 0, None
    try:
        while True:
            batch = _prune_batch(conn, before_ms, sign)
            if batch is None:
                return removed, anchor
            removed, anchor = removed + batch[0], batch[1]
    finally:
        conn.close()


def _prune_batch(
    conn: sqlite3.Connection, before_ms: int, sign: Sign
) -> tuple[int, CheckpointRow] | None:
    """Remove up to PRUNE_BATCH of the oldest records older than ``before_ms``; (how many,
    the anchor at the cut), or None when none is left."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        cut = conn.execute(
            "SELECT seq, hash FROM (SELECT seq, hash, ts_ms FROM audit ORDER BY seq LIMIT ?) "
            "WHERE ts_ms < ? ORDER BY seq DESC LIMIT 1",
            (PRUNE_BATCH, before_ms),
        ).fetchone()
        if cut is None:
            rollback(conn)
            return None
        seq, head = int(cut[0]), str(cut[1])
        anchor = sign(seq, head, int(time.time() * 1000), "prune")
        conn.execute(INSERT_CHECKPOINT, checkpoint_values(anchor))
        removed = conn.execute("DELETE FROM audit WHERE seq <= ?", (seq,)).rowcount
        conn.execute("DELETE FROM audit_checkpoints WHERE seq < ?", (seq,))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        rollback(conn)
        raise StoreError(f"cannot prune the audit trail: {exc}") from None
    return removed, anchor
