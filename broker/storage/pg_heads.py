"""The audit chain's signed heads in PostgreSQL (table ``audit_heads``), away from the trail:
whoever deletes the trail leaves them behind. The newest HEADS_KEPT are kept, and always the
one with the highest seq (as on SQLite: ``sqlite_heads``)."""

from __future__ import annotations

import psycopg

from broker.storage.pg_connection import CONNECT_TIMEOUT_S, Connection, PgDatabase
from broker.storage.records import CHECKPOINT_COLUMNS, CheckpointRow, StoreError
from broker.storage.sqlite_heads import HEADS_KEPT
from broker.storage.urls import redacted

_COLUMNS = ", ".join(CHECKPOINT_COLUMNS)
_INSERT = f"INSERT INTO audit_heads ({_COLUMNS}) VALUES ({', '.join(['%s'] * 7)})"  # noqa: S608
_PRUNE = (
    "DELETE FROM audit_heads WHERE id <= (SELECT max(id) FROM audit_heads) - %s "
    "AND seq < (SELECT max(seq) FROM audit_heads)"
)
_SELECT = f"SELECT {_COLUMNS} FROM audit_heads ORDER BY id"  # noqa: S608


class PgAuditHeads:
    """The AuditHeadStore of the PostgreSQL backend."""

    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    async def all(self) -> list[CheckpointRow]:
        """Every head kept, oldest first."""

        async def read(conn: Connection) -> list[CheckpointRow]:
            cursor = await conn.execute(_SELECT)
            return [CheckpointRow(*row) for row in await cursor.fetchall()]

        return await self._db.read(read)

    async def add(self, row: CheckpointRow) -> None:
        """Keep a signed checkpoint."""
        values = tuple(getattr(row, column) for column in CHECKPOINT_COLUMNS)

        async def add(conn: Connection) -> None:
            await conn.execute(_INSERT, values)
            await conn.execute(_PRUNE, (HEADS_KEPT,))

        await self._db.run(add)


class PgHeadsLedger:
    """The audit writer's connection to the state's PostgreSQL database, for its checkpoints
    only (the writer is a process of its own, with no event loop: a plain connection)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def add(self, row: CheckpointRow) -> None:
        """Keep a signed checkpoint; StoreError if the database cannot take it (the caller
        logs it: the checkpoint is in the trail and goes to the witnesses all the same)."""
        values = tuple(getattr(row, column) for column in CHECKPOINT_COLUMNS)
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._url, connect_timeout=int(CONNECT_TIMEOUT_S))
            with self._conn.transaction():
                self._conn.execute(_INSERT, values)
                self._conn.execute(_PRUNE, (HEADS_KEPT,))
        except psycopg.Error as exc:
            self.close()  # a fresh connection next time: the server may have restarted
            raise StoreError(
                f"cannot keep the checkpoint in {redacted(self._url)}: {exc}"
            ) from None

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
