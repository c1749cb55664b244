"""Budget use in SQLite: the ``budgets`` table of broker.db, one row per scope and period."""

from __future__ import annotations

from broker.storage.group_commit import GroupCommit
from broker.storage.records import Usage
from broker.storage.sqlite_connection import Reads

_ADD = (
    "INSERT INTO budgets (scope, period, calls, cost, alerted) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (scope, period) DO UPDATE SET calls = calls + excluded.calls, "
    "cost = cost + excluded.cost, alerted = max(alerted, excluded.alerted)"
)


class SqliteBudgets:
    """The BudgetStore of the SQLite backend."""

    def __init__(self, writes: GroupCommit, reads: Reads) -> None:
        self._writes = writes
        self._reads = reads

    async def usage(self, scope: str, period: str) -> Usage:
        """What has been spent of a budget so far."""
        query = "SELECT calls, cost, alerted FROM budgets WHERE scope = ? AND period = ?"
        row = await self._reads.run(lambda c: c.execute(query, (scope, period)).fetchone())
        return Usage(int(row[0]), int(row[1]), int(row[2])) if row else Usage()

    def add_usage(self, scope: str, period: str, usage: Usage) -> None:
        """Queued: committed with the next batch, before the call's own audit record."""
        self._writes.queue(_ADD, (scope, period, usage.calls, usage.cost, usage.alerted))
