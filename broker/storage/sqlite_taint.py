"""Taint in SQLite: the ``taint`` table of broker.db, outside values per agent and task."""

from __future__ import annotations

from collections.abc import Sequence

from broker.storage.group_commit import GroupCommit
from broker.storage.records import TaintRow
from broker.storage.sqlite_connection import Reads

_ADD = (
    "INSERT OR IGNORE INTO taint (agent, task_id, kind, value, origin, ts_ms) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


class SqliteTaint:
    """The TaintStore of the SQLite backend."""

    def __init__(self, writes: GroupCommit, reads: Reads) -> None:
        self._writes = writes
        self._reads = reads

    async def values(self, agent: str, task_id: str) -> list[TaintRow]:
        """Every outside value seen in this agent's task."""
        query = "SELECT kind, value, origin FROM taint WHERE agent = ? AND task_id = ?"
        rows = await self._reads.run(lambda c: c.execute(query, (agent, task_id)).fetchall())
        return [TaintRow(*row) for row in rows]

    def add(self, agent: str, task_id: str, rows: Sequence[TaintRow], now_ms: int) -> None:
        """Queued (all of them as one job): committed with the call's audit record."""
        values = [(agent, task_id, r.kind, r.value, r.origin, now_ms) for r in rows]
        if values:
            self._writes.queue_many(_ADD, values)
