"""The audit trail in PostgreSQL, read by the broker at start and by the command line, and
pruned: the AuditReader of the PostgreSQL backend (its writer is ``pg_audit_ledger``).

The reader connects when first asked and never creates the schema except in ``prepare``: a
``broker audit verify`` against a database the broker never used says so instead of making
empty tables there.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from broker.storage.audit_sql import SELECT_RECORDS, audit_query_sql
from broker.storage.interfaces import Sign
from broker.storage.pg_audit_ledger import INSERT_CHECKPOINT, SELECT_CHECKPOINTS, checkpoint_values
from broker.storage.pg_connection import Connection, PgDatabase
from broker.storage.pg_schema import MIGRATIONS
from broker.storage.records import (
    AUDIT_COLUMNS,
    STEP_EVENTS,
    Attempt,
    AuditQuery,
    AuditRow,
    CheckpointRow,
    StoreError,
)

CHAIN_CHUNK = 2_000  # records read at a time by a verify
PRUNE_BATCH = 5_000  # records removed in one transaction (as on SQLite: sqlite_audit)
READER_POOL = 2  # a reader's connections: the broker at start, or one command


class PgAuditReader:
    """The AuditReader of the PostgreSQL backend."""

    def __init__(self, url: str) -> None:
        self._db = PgDatabase(url, pool_size=READER_POOL, name="toolbroker-audit")
        self._opened = False

    async def prepare(self) -> None:
        """Create or migrate the schema (the trail's tables are part of it)."""
        await self._open(MIGRATIONS)

    async def present(self) -> bool:
        """Whether the trail's table exists in the database."""
        rows = await self._rows("SELECT to_regclass('audit') IS NOT NULL", ())
        return bool(rows[0][0])

    async def query(self, query: AuditQuery) -> list[AuditRow]:
        """Records matching ``query``, in chain order."""
        sql, params = audit_query_sql(query, "%s")
        rows = [AuditRow(*row) for row in await self._rows(sql, params)]
        return rows[::-1] if query.newest else rows

    async def chain(self, from_seq: int) -> AsyncIterator[tuple[Any, ...]]:
        """Every record from ``from_seq`` on, in chain order, a chunk at a time."""
        sql = SELECT_RECORDS + "WHERE seq >= %s ORDER BY seq LIMIT %s"
        while True:
            chunk = await self._rows(sql, (from_seq, CHAIN_CHUNK))
            for row in chunk:
                yield row
            if len(chunk) < CHAIN_CHUNK:
                return
            from_seq = int(chunk[-1][AUDIT_COLUMNS.index("seq")]) + 1

    async def checkpoints(self) -> list[CheckpointRow]:
        """Every signed checkpoint, oldest first."""
        rows = await self._rows(SELECT_CHECKPOINTS + "ORDER BY seq", ())
        return [CheckpointRow(*row) for row in rows]

    async def recent_nonces(self, since_ms: int) -> dict[str, int]:
        """Accepted nonces recorded at or after ``since_ms``, with when they were recorded."""
        sql = "SELECT nonce, ts_ms FROM audit WHERE ts_ms >= %s AND nonce != ''"
        return {str(nonce): int(ts) for nonce, ts in await self._rows(sql, (since_ms,))}

    async def attempts(self, since_ms: int) -> list[Attempt]:
        """The final records of calls since ``since_ms`` (not their steps, not replays)."""
        sql = (
            "SELECT ts_ms, agent, tool, args_digest, decision, reason FROM audit "
            "WHERE ts_ms >= %s AND rpc = 'call' AND agent != '' "
            "AND event NOT IN (%s, %s, 'replayed') ORDER BY seq"
        )
        return [Attempt(*row) for row in await self._rows(sql, (since_ms, *STEP_EVENTS))]

    async def prune(self, before_ms: int, sign: Sign) -> tuple[int, CheckpointRow | None]:
        """Delete what is older than ``before_ms`` in batches, each a transaction of its own
        that leaves a signed anchor at its cut (the trail verifies between batches)."""
        await self._open(None)
        removed, anchor = 0, None

        async def batch(conn: Connection) -> tuple[int, CheckpointRow] | None:
            cursor = await conn.execute(
                "SELECT seq, hash FROM (SELECT seq, hash, ts_ms FROM audit ORDER BY seq "
                "LIMIT %s) AS oldest WHERE ts_ms < %s ORDER BY seq DESC LIMIT 1",
                (PRUNE_BATCH, before_ms),
            )
            cut = await cursor.fetchone()
            if cut is None:
                return None
            seq, head = int(cut[0]), str(cut[1])
            mark = sign(seq, head, int(time.time() * 1000), "prune")
            await conn.execute(INSERT_CHECKPOINT, checkpoint_values(mark))
            deleted = await conn.execute("DELETE FROM audit WHERE seq <= %s", (seq,))
            await conn.execute("DELETE FROM audit_checkpoints WHERE seq < %s", (seq,))
            return deleted.rowcount, mark

        while (done := await self._db.run(batch)) is not None:
            removed, anchor = removed + done[0], done[1]
        return removed, anchor

    async def close(self) -> None:
        """Close the connections."""
        if self._opened:
            await self._db.close()

    async def _open(self, migrations: list[str] | None) -> None:
        if not self._opened:
            await self._db.open(migrations)
            self._opened = True
        elif migrations is not None:
            raise StoreError("prepare the audit trail before reading it")

    async def _rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        await self._open(None)

        async def read(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

        try:
            return await self._db.read(read)
        except StoreError as exc:
            if "does not exist" in str(exc):  # a database no broker has written to
                where = self._db.where
                raise StoreError(f"no audit trail in {where} (has the broker run?)") from None
            raise
