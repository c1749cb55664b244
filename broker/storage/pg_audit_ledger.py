"""The audit trail in PostgreSQL as the audit writer processes write it: one hash chain that
every replica's writer extends.

The chain's head (its length, last hash, and the checkpoint schedule) is the one row of
``audit_chain``. Each batch is one transaction that locks that row ``FOR UPDATE``, links its
records after the head it finds, inserts them, signs a checkpoint if one is due, and stores the
new head: writers of different replicas take turns per batch, and no two records ever get the
same place in the chain. With durability ``fsync`` a commit is on disk when PostgreSQL
answers (``synchronous_commit`` on), so there is no log of our own to fsync or copy.

The writer is a process of its own without an event loop: one plain connection, made again
after a failure (the server may have restarted). Failures become StoreError, without the
URL's password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from broker.storage.interfaces import ChainHead
from broker.storage.pg_connection import CONNECT_TIMEOUT_S, error_text, no_nul
from broker.storage.records import AUDIT_COLUMNS, CHECKPOINT_COLUMNS, CheckpointRow, StoreError
from broker.storage.urls import redacted

# How long a batch waits for the chain's head row. Other replicas' writers hold it for a
# batch's few milliseconds; a session that holds it longer (a stuck transaction, someone
# locking it by hand) makes calls fail closed (AUDIT_UNAVAILABLE) in seconds, not hang.
HEAD_LOCK_TIMEOUT_MS = 2000

# The column names are constants and every value is bound: no injection path.
INSERT_RECORD = (
    f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(AUDIT_COLUMNS))})"
)
INSERT_CHECKPOINT = (
    f"INSERT INTO audit_checkpoints ({', '.join(CHECKPOINT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(CHECKPOINT_COLUMNS))}) ON CONFLICT (seq) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in CHECKPOINT_COLUMNS if c != "seq")
)
SELECT_CHECKPOINTS = f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM audit_checkpoints "  # noqa: S608
_LOCK_HEAD = (
    "SELECT seq, head, since_checkpoint, last_checkpoint_ms FROM audit_chain "
    "WHERE id = 1 FOR UPDATE"
)
_KEEP_HEAD = (
    "UPDATE audit_chain SET seq = %s, head = %s, since_checkpoint = %s, "
    "last_checkpoint_ms = %s WHERE id = 1"
)


def checkpoint_values(mark: CheckpointRow) -> tuple[object, ...]:
    """A checkpoint's values in CHECKPOINT_COLUMNS order."""
    return tuple(getattr(mark, column) for column in CHECKPOINT_COLUMNS)


class PgAuditLedger:
    """The TrailLedger of the PostgreSQL backend: the writer's connection to the shared
    chain."""

    def __init__(self, url: str, *, durable: bool = True) -> None:
        """``durable`` (durability ``fsync``): a batch is acknowledged once PostgreSQL has it
        on disk; else (``process``) once PostgreSQL has it, before its disk does
        (``synchronous_commit = off``): it survives the broker, not a crash of the server."""
        self._durable = durable
        self._url = url
        self.where = redacted(url)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._connect()  # a writer that cannot reach the database says so at its start

    def head(self) -> tuple[tuple[int, str] | None, CheckpointRow | None]:
        """(seq, hash) of the chain's head, and the last checkpoint."""
        with self._errors("read the audit chain's head"):
            conn = self._connect()
            row = conn.execute("SELECT seq, head FROM audit_chain WHERE id = 1").fetchone()
            mark = conn.execute(SELECT_CHECKPOINTS + "ORDER BY seq DESC LIMIT 1").fetchone()
        last = (int(row[0]), str(row[1])) if row and int(row[0]) > 0 else None
        return last, CheckpointRow(*mark) if mark else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ChainHead | None]:
        """One transaction holding the chain's head row; yields the head as it is now
        (another replica's writer may have moved it since this one's last batch)."""
        with self._errors("write the audit trail"):
            conn = self._connect()
            with conn.transaction():
                row = conn.execute(_LOCK_HEAD).fetchone()
                if row is None:
                    raise StoreError("the audit chain's head row is missing: run `broker migrate`")
                yield int(row[0]), str(row[1]), int(row[2]), int(row[3])

    def keep_head(self, head: ChainHead) -> None:
        """Store the head as this transaction leaves it."""
        assert self._conn is not None
        self._conn.execute(_KEEP_HEAD, head)

    def commit_durably(self, durable: bool) -> None:
        """A batch no one waits on the disk for commits without waiting for it: the next
        durable commit (PostgreSQL's log is written in order) takes it to disk, as SQLite's
        fsync after a later batch does."""
        assert self._conn is not None
        if self._durable and not durable:
            self._conn.execute("SET LOCAL synchronous_commit = off")

    def storable(self, values: Sequence[Any]) -> Sequence[Any]:
        """A record's values as a TEXT column holds them (no U+0000), before they are hashed:
        the stored record is then exactly the one its hash covers."""
        if not any(isinstance(v, str) and "\x00" in v for v in values):
            return values
        return [no_nul(v) if isinstance(v, str) else v for v in values]

    def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Chained records (every column, hash last), inside a transaction."""
        assert self._conn is not None
        with self._conn.cursor() as cursor:
            cursor.executemany(INSERT_RECORD, rows)

    def insert_checkpoint(self, mark: CheckpointRow) -> None:
        """A signed checkpoint, inside a transaction."""
        assert self._conn is not None
        self._conn.execute(INSERT_CHECKPOINT, checkpoint_values(mark))

    def sync(self) -> None:
        """Nothing to do: PostgreSQL has the commit on disk before it answers."""

    def copy_log(self) -> None:
        """Nothing to do: PostgreSQL keeps its own log."""

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=max(1, int(CONNECT_TIMEOUT_S)),
                    options=f"-c lock_timeout={HEAD_LOCK_TIMEOUT_MS}"
                    + ("" if self._durable else " -c synchronous_commit=off"),
                )
            except psycopg.Error as exc:
                reason = error_text(exc)
                raise StoreError(f"cannot reach the database {self.where}: {reason}") from None
        return self._conn

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            self.close()  # a fresh connection next time: the server may have restarted
            raise StoreError(f"cannot {doing} in {self.where}: {error_text(exc)}") from None
