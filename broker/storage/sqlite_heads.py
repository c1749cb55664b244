"""The audit chain's signed heads kept in ``broker.db`` (table ``audit_heads``), away from
``audit.db``: whoever deletes or replaces the trail's file leaves them behind, and
``broker audit verify`` compares the chain with them.

The audit writer process adds each checkpoint it signs on a connection of its own
(``HeadsLedger``); verification reads them with the state store (``SqliteAuditHeads``). The
newest HEADS_KEPT are kept, and always the one with the highest seq, so a trail cut short
stays caught however many checkpoints a restarted broker signs after the cut.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from broker.storage.group_commit import GroupCommit
from broker.storage.records import CHECKPOINT_COLUMNS, CheckpointRow, StoreError
from broker.storage.sqlite_connection import Reads, rollback

log = logging.getLogger(__name__)

HEADS_KEPT = 1000
HEADS_BUSY_TIMEOUT_S = 2.0  # the broker holds broker.db's lock for milliseconds at a time
_COLUMNS = ", ".join(CHECKPOINT_COLUMNS)
_INSERT = f"INSERT INTO audit_heads ({_COLUMNS}) VALUES ({', '.join('?' * 7)})"  # noqa: S608
_PRUNE = (
    "DELETE FROM audit_heads WHERE id <= (SELECT max(id) FROM audit_heads) - ? "
    "AND seq < (SELECT max(seq) FROM audit_heads)"
)
_SELECT = f"SELECT {_COLUMNS} FROM audit_heads ORDER BY id"  # noqa: S608


def _values(row: CheckpointRow) -> tuple[object, ...]:
    return (row.seq, row.head_hash, row.ts_ms, row.kind, row.key_id, row.signature, row.broker_id)


class HeadsLedger:
    """The audit writer's connection to broker.db, for its checkpoints only."""

    def __init__(self, database: Path) -> None:
        self.path = database
        self._conn: sqlite3.Connection | None = None

    def add(self, row: CheckpointRow) -> None:
        """Keep a signed checkpoint; StoreError if broker.db cannot take it (the caller logs
        it: the checkpoint is in audit.db and goes to the witnesses all the same)."""
        try:
            if self._conn is None:
                if not self.path.exists():  # connecting would make an empty one
                    raise StoreError(f"no broker database at {self.path}")
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, timeout=HEADS_BUSY_TIMEOUT_S
                )
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(_INSERT, _values(row))
            self._conn.execute(_PRUNE, (HEADS_KEPT,))
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn is not None:
                rollback(self._conn)
            raise StoreError(f"cannot keep the checkpoint in {self.path}: {exc}") from None

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SqliteAuditHeads:
    """The AuditHeadStore of the SQLite backend."""

    def __init__(self, writes: GroupCommit, reads: Reads) -> None:
        self._writes = writes
        self._reads = reads

    async def all(self) -> list[CheckpointRow]:
        """Every head kept, oldest first."""
        rows = await self._reads.run(lambda c: c.execute(_SELECT).fetchall())
        return [CheckpointRow(*row) for row in rows]

    async def add(self, row: CheckpointRow) -> None:
        """Keep a signed checkpoint (a prune's anchor, signed by the command line)."""

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(_INSERT, _values(row))
            conn.execute(_PRUNE, (HEADS_KEPT,))

        await self._writes.run(add)
