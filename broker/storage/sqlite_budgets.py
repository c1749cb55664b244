"""Budget use in SQLite: the ``budgets`` table of broker.db, one row per scope and period."""

from __future__ import annotations

import time

from broker.storage.group_commit import GroupCommit, prune_in_batches
from broker.storage.records import Usage
from broker.storage.sqlite_connection import Reads

_ADD = (
    "INSERT INTO budgets (scope, period, calls, cost, alerted, updated_ms) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (scope, period) DO UPDATE SET calls = calls + excluded.calls, "
    "cost = cost + excluded.cost, alerted = max(alerted, excluded.alerted), "
    "updated_ms = excluded.updated_ms"
)
# days before the given one, and tasks (period "task") idle since before the given time
_PRUNE = (
    "DELETE FROM budgets WHERE (scope, period) IN (SELECT scope, period FROM budgets "
    "WHERE (period != 'task' AND period < ?) OR (period = 'task' AND updated_ms < ?) LIMIT ?)"
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
        now = time.time_ns() // 1_000_000
        self._writes.queue(_ADD, (scope, period, usage.calls, usage.cost, usage.alerted, now))

    async def prune(self, before_day: str, idle_before_ms: int) -> int:
        """Drop past days' use and idle tasks', in batches."""
        return await prune_in_batches(self._writes, _PRUNE, (before_day, idle_before_ms))
