"""Budget use in PostgreSQL: the ``budgets`` table, one row per scope and period. A charge is
one ``INSERT ... ON CONFLICT DO UPDATE`` adding to the row, so charges from any number of
replicas add up exactly."""

from __future__ import annotations

import time

from broker.storage.pg_connection import Connection, PgDatabase, delete_in_batches
from broker.storage.pg_queue import QueuedWrites
from broker.storage.records import Usage

_ADD = (
    "INSERT INTO budgets (scope, period, calls, cost, alerted, updated_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (scope, period) DO UPDATE SET calls = budgets.calls + excluded.calls, "
    "cost = budgets.cost + excluded.cost, alerted = GREATEST(budgets.alerted, excluded.alerted), "
    "updated_ms = excluded.updated_ms"
)
_PRUNE = (
    "DELETE FROM budgets WHERE (scope, period) IN (SELECT scope, period FROM budgets "
    "WHERE (period != 'task' AND period < %s) OR (period = 'task' AND updated_ms < %s) LIMIT %s)"
)


class PgBudgets:
    """The BudgetStore of the PostgreSQL backend."""

    def __init__(self, database: PgDatabase, writes: QueuedWrites) -> None:
        self._db = database
        self._writes = writes

    async def usage(self, scope: str, period: str) -> Usage:
        """What has been spent of a budget so far."""

        async def read(conn: Connection) -> Usage:
            cursor = await conn.execute(
                "SELECT calls, cost, alerted FROM budgets WHERE scope = %s AND period = %s",
                (scope, period),
            )
            row = await cursor.fetchone()
            return Usage(int(row[0]), int(row[1]), int(row[2])) if row else Usage()

        return await self._db.read(read)

    def add_usage(self, scope: str, period: str, usage: Usage) -> None:
        """Queued: committed with the next batch, before the call's own audit record."""
        now = time.time_ns() // 1_000_000
        self._writes.queue(_ADD, (scope, period, usage.calls, usage.cost, usage.alerted, now))

    async def prune(self, before_day: str, idle_before_ms: int) -> int:
        """Drop past days' use and idle tasks', in batches."""
        return await delete_in_batches(self._db, _PRUNE, (before_day, idle_before_ms))
