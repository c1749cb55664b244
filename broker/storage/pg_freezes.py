"""Freezes (kill switches) in PostgreSQL: the ``freezes`` table. Each change is announced
(``pg_changes``) in its own transaction: every replica re-reads the freezes when it commits."""

from __future__ import annotations

from broker.storage.pg_changes import announce
from broker.storage.pg_connection import Connection, PgDatabase, no_nul
from broker.storage.records import Freeze

_SET = (
    "INSERT INTO freezes (agent, reason, frozen_by, ts_ms) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (agent) DO UPDATE SET reason = excluded.reason, "
    "frozen_by = excluded.frozen_by, ts_ms = excluded.ts_ms"
)


class PgFreezes:
    """The FreezeStore of the PostgreSQL backend."""

    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    async def all(self) -> dict[str, Freeze]:
        """agent (or ``*``) -> its freeze."""

        async def read(conn: Connection) -> dict[str, Freeze]:
            cursor = await conn.execute("SELECT agent, reason, frozen_by, ts_ms FROM freezes")
            return {row[0]: Freeze(*row) for row in await cursor.fetchall()}

        return await self._db.read(read)

    async def set(self, freeze: Freeze) -> None:
        """Freeze an agent; committed when this returns."""
        values = (freeze.agent, no_nul(freeze.reason), no_nul(freeze.by), freeze.ts_ms)

        async def write(conn: Connection) -> None:
            await conn.execute(_SET, values)
            await announce(conn, "freezes")

        await self._db.run(write)

    async def clear(self, agent: str) -> bool:
        """Lift a freeze; False when there was none."""

        async def delete(conn: Connection) -> bool:
            cursor = await conn.execute("DELETE FROM freezes WHERE agent = %s", (agent,))
            await announce(conn, "freezes")
            return cursor.rowcount > 0

        return await self._db.run(delete)
