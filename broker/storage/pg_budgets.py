"""Budget use in PostgreSQL: the ``budgets`` table, one row per scope and period.

Replicas charge with ``spend``: one transaction locks the call's budget rows (in one order, so
two charges never wait on each other in a circle), checks every limit against what all
replicas spent, and adds the call to all of them or to none: N replicas never let an agent
spend past its budget. Its alert level moves in the same transaction, so each alert is sent
once, by whichever replica crossed it. ``add_usage`` (one ``INSERT ... ON CONFLICT DO
UPDATE``) adds without a check."""

from __future__ import annotations

import time
from collections.abc import Sequence

from broker.storage.pg_connection import ASYNC_COMMIT, Connection, PgDatabase, delete_in_batches
from broker.storage.pg_queue import QueuedWrites
from broker.storage.records import AlertLevel, Charge, Spent, Usage

_ADD = (
    "INSERT INTO budgets (scope, period, calls, cost, alerted, updated_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (scope, period) DO UPDATE SET calls = budgets.calls + excluded.calls, "
    "cost = budgets.cost + excluded.cost, alerted = GREATEST(budgets.alerted, excluded.alerted), "
    "updated_ms = excluded.updated_ms"
)
_ENSURE = (
    "INSERT INTO budgets (scope, period, calls, cost, alerted, updated_ms) "
    "VALUES (%s, %s, 0, 0, 0, %s) ON CONFLICT (scope, period) DO NOTHING"
)
_LOCK = "SELECT calls, cost, alerted FROM budgets WHERE scope = %s AND period = %s FOR UPDATE"
_SET = (
    "UPDATE budgets SET calls = %s, cost = %s, alerted = %s, updated_ms = %s "
    "WHERE scope = %s AND period = %s"
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

    async def spend(self, charges: Sequence[Charge], cost: int, level: AlertLevel) -> Spent:
        """One call and ``cost`` units from every budget in ``charges``, or from none."""
        order = sorted(range(len(charges)), key=lambda i: (charges[i].scope, charges[i].period))
        now = time.time_ns() // 1_000_000

        async def spend(conn: Connection) -> Spent:
            await conn.execute(ASYNC_COMMIT)  # on disk with the call's audit record
            found: dict[int, Usage] = {}
            for index in order:
                charge = charges[index]
                await conn.execute(_ENSURE, (charge.scope, charge.period, now))
                cursor = await conn.execute(_LOCK, (charge.scope, charge.period))
                row = await cursor.fetchone()
                assert row is not None  # made just above
                found[index] = Usage(int(row[0]), int(row[1]), int(row[2]))
            usages = [found[i] for i in range(len(charges))]
            for index, (charge, used) in enumerate(zip(charges, usages, strict=True)):
                over_calls = charge.calls is not None and used.calls + 1 > charge.calls
                over_cost = charge.cost is not None and used.cost + cost > charge.cost
                if over_calls or over_cost:
                    return Spent(index, usages, [False] * len(charges))
            after, raised = [], []
            for charge, used in zip(charges, usages, strict=True):
                spent = Usage(used.calls + 1, used.cost + cost, used.alerted)
                reached = level(charge, spent)
                raised.append(reached > used.alerted)
                spent = Usage(spent.calls, spent.cost, max(reached, used.alerted))
                await conn.execute(
                    _SET, (spent.calls, spent.cost, spent.alerted, now, charge.scope, charge.period)
                )
                after.append(spent)
            return Spent(None, after, raised)

        return await self._db.run(spend)

    async def prune(self, before_day: str, idle_before_ms: int) -> int:
        """Drop past days' use and idle tasks', in batches."""
        return await delete_in_batches(self._db, _PRUNE, (before_day, idle_before_ms))
