"""Freezes (kill switches) in SQLite: the ``freezes`` table of broker.db."""

from __future__ import annotations

from broker.storage.group_commit import GroupCommit
from broker.storage.records import Freeze
from broker.storage.sqlite_connection import Reads


class SqliteFreezes:
    """The FreezeStore of the SQLite backend."""

    def __init__(self, writes: GroupCommit, reads: Reads) -> None:
        self._writes = writes
        self._reads = reads

    async def all(self) -> dict[str, Freeze]:
        """agent (or ``*``) -> its freeze."""
        query = "SELECT agent, reason, frozen_by, ts_ms FROM freezes"
        rows = await self._reads.run(lambda c: c.execute(query).fetchall())
        return {row[0]: Freeze(*row) for row in rows}

    async def set(self, freeze: Freeze) -> None:
        """Freeze an agent; durable when this returns."""
        values = (freeze.agent, freeze.reason, freeze.by, freeze.ts_ms)
        await self._writes.run(
            lambda c: c.execute(
                "INSERT INTO freezes (agent, reason, frozen_by, ts_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (agent) DO UPDATE SET reason = excluded.reason, "
                "frozen_by = excluded.frozen_by, ts_ms = excluded.ts_ms",
                values,
            )
        )

    async def clear(self, agent: str) -> bool:
        """Lift a freeze; False when there was none."""
        return await self._writes.run(
            lambda c: c.execute("DELETE FROM freezes WHERE agent = ?", (agent,)).rowcount > 0
        )
