"""``audit.db`` as the audit writer process writes it: where the chain ends, records and
checkpoints in one transaction, the log fsynced and copied into the database.

The chain's logic (linking, when to sign) is the writer's (``broker.audit.writer``); its SQL is
here. Failures become StoreError.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from broker.storage.group_commit import open_for_writes
from broker.storage.interfaces import ChainHead
from broker.storage.records import AUDIT_COLUMNS, CHECKPOINT_COLUMNS, CheckpointRow, StoreError
from broker.storage.sqlite_connection import BUSY_TIMEOUT_S, WalSync, rollback
from broker.storage.sqlite_schema import AUDIT_MIGRATIONS, audit_database

log = logging.getLogger(__name__)

# The column names are constants and every value is bound: no injection path.
INSERT_RECORD = (
    f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})"
)
INSERT_CHECKPOINT = (
    f"INSERT OR REPLACE INTO audit_checkpoints ({', '.join(CHECKPOINT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(CHECKPOINT_COLUMNS))})"
)
SELECT_CHECKPOINTS = f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM audit_checkpoints "  # noqa: S608


def checkpoint_values(mark: CheckpointRow) -> tuple[object, ...]:
    """A checkpoint's values in CHECKPOINT_COLUMNS order."""
    return tuple(getattr(mark, column) for column in CHECKPOINT_COLUMNS)


class AuditLedger:
    """The TrailLedger of the SQLite backend: the writer's connection to audit.db."""

    def __init__(self, database: Path) -> None:
        path = audit_database(database)
        try:
            self._conn = open_for_writes(path, AUDIT_MIGRATIONS)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the audit database {path}: {exc}") from None
        self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        self._wal = WalSync(Path(f"{path}-wal"))

    def head(self) -> tuple[tuple[int, str] | None, CheckpointRow | None]:
        """(seq, hash) of the last record, and the last checkpoint."""
        last = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        mark = self._conn.execute(SELECT_CHECKPOINTS + "ORDER BY seq DESC LIMIT 1")
        record, checkpoint = last.fetchone(), mark.fetchone()
        return (
            (int(record[0]), str(record[1])) if record else None,
            CheckpointRow(*checkpoint) if checkpoint else None,
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ChainHead | None]:
        """One write transaction, rolled back (StoreError) if any of it fails. It yields None:
        this writer alone extends audit.db's chain (the data directory's lock), so its own
        memory of the head is right."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield None
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(self._conn)
            raise StoreError(f"database write failed: {exc}") from None

    def keep_head(self, head: ChainHead) -> None:
        """Nothing to keep: the head is the last record."""

    def commit_durably(self, durable: bool) -> None:
        """Nothing to do: ``sync`` fsyncs the log after the commit when asked."""

    def storable(self, values: Sequence[Any]) -> Sequence[Any]:
        """SQLite stores every value as it is."""
        return values

    def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Chained records (every column, hash last), inside a transaction."""
        self._conn.executemany(INSERT_RECORD, rows)

    def insert_checkpoint(self, mark: CheckpointRow) -> None:
        """A signed checkpoint, inside a transaction."""
        self._conn.execute(INSERT_CHECKPOINT, checkpoint_values(mark))

    def sync(self) -> None:
        """fsync the log: what is committed is then on disk."""
        try:
            self._wal.sync()
        except OSError as exc:
            raise StoreError(f"fsync of the audit log failed: {exc}") from None

    def copy_log(self) -> None:
        """Copy the log into the database (a failure only lets the log grow: logged)."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("copying the audit log into its database failed, will retry: %s", exc)

    def close(self) -> None:
        """Close the connection and the log file."""
        self._conn.close()
        self._wal.close()
