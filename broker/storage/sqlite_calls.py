"""Stored calls in SQLite (the ``calls`` table of broker.db): writes and pending approvals.

Every state change is a compare-and-set in one statement (``UPDATE ... WHERE state IN``), so
two decisions racing (a double click, Slack against the command line) decide once. Writes go
through the group commit; reads run on the reader thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace

from broker.storage.group_commit import GroupCommit, prune_in_batches
from broker.storage.records import CALL_COLUMNS, CallRecord, check_changes
from broker.storage.sqlite_connection import Reads

# The column names are constants and every value is bound: no injection path.
_SELECT = f"SELECT {', '.join(CALL_COLUMNS)} FROM calls "  # noqa: S608
_INSERT = (
    f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(CALL_COLUMNS))})"
)


class SqliteCalls:
    """The CallStore of the SQLite backend."""

    def __init__(self, writes: GroupCommit, reads: Reads) -> None:
        self._writes = writes
        self._reads = reads

    async def insert(self, record: CallRecord) -> bool:
        """Store a new call; False when (agent, idempotency_key) is already taken."""
        values = tuple(getattr(record, name) for name in CALL_COLUMNS)

        def insert(conn: sqlite3.Connection) -> bool:
            try:
                conn.execute(_INSERT, values)
            except sqlite3.IntegrityError:
                return False
            return True

        return await self._writes.run(insert)

    async def get(self, call_id: str) -> CallRecord | None:
        """One call by id."""
        return _first(await self._select("WHERE call_id = ?", (call_id,)))

    async def find(self, agent: str, idempotency_key: str) -> CallRecord | None:
        """The call an agent made with this idempotency key."""
        where = "WHERE agent = ? AND idempotency_key = ?"
        return _first(await self._select(where, (agent, idempotency_key)))

    async def transition(
        self, call_id: str, from_states: Sequence[str], to_state: str, **changes: object
    ) -> bool:
        """Compare-and-set: move a call to ``to_state`` only if it is in one of
        ``from_states``; False when another decision came first."""
        check_changes(changes)
        sets = ", ".join(["state = ?", *[f"{name} = ?" for name in changes]])
        marks = ", ".join("?" * len(from_states))
        sql = f"UPDATE calls SET {sets} WHERE call_id = ? AND state IN ({marks})"  # noqa: S608
        params = (to_state, *changes.values(), call_id, *from_states)
        return await self._writes.run(lambda c: c.execute(sql, params).rowcount == 1)

    async def update(self, call_id: str, **changes: object) -> None:
        """Set fields of a call whatever its state (bookkeeping: Slack message, reminders)."""
        check_changes(changes)
        sets = ", ".join(f"{name} = ?" for name in changes)
        sql = f"UPDATE calls SET {sets} WHERE call_id = ?"  # noqa: S608
        await self._writes.run(lambda c: c.execute(sql, (*changes.values(), call_id)))

    async def in_states(
        self, states: Sequence[str], *, agent: str | None = None, updated_since_ms: int = 0
    ) -> list[CallRecord]:
        """Calls in one of ``states`` (of ``agent`` only), plus those updated since then."""
        where = f"state IN ({', '.join('?' * len(states))})"
        params: list[object] = list(states)
        if agent is not None:
            where += " AND agent = ?"
            params.append(agent)
        if updated_since_ms:
            where = f"({where}) OR updated_ms >= ?"
            params.append(updated_since_ms)
        return await self._select(f"WHERE {where}", tuple(params))

    async def expiring(self, now_ms: int) -> list[CallRecord]:
        """Pending calls whose expiry has come."""
        return await self._select("WHERE state = 'pending' AND expires_at_ms <= ?", (now_ms,))

    async def unreminded(self, now_ms: int) -> list[CallRecord]:
        """Pending calls past their escalation time, not reminded yet."""
        where = "WHERE state = 'pending' AND reminded = 0 AND escalate_at_ms <= ?"
        return await self._select(where, (now_ms,))

    async def count(self, state: str | None = None) -> int:
        """How many calls are in ``state`` (or stored at all)."""
        query, params = "SELECT count(*) FROM calls", ()  # type: str, tuple[str, ...]
        if state is not None:
            query, params = query + " WHERE state = ?", (state,)
        return int(await self._reads.run(lambda c: c.execute(query, params).fetchone()[0]))

    async def mark_unfinished(self, now_ms: int) -> list[CallRecord]:
        """Writes left ``executing`` become ``outcome_unknown``, in one statement (nothing can
        start executing between a read and the update); returns them as they were."""
        rows = await self._writes.run(lambda c: c.execute(_MARK, (now_ms,)).fetchall())
        return [replace(CallRecord(*row), state=EXECUTING) for row in rows]

    async def prune(self, before_ms: int) -> int:
        """Drop final calls last changed before ``before_ms``, in batches."""
        return await prune_in_batches(self._writes, _PRUNE, (*FINAL_STATES, before_ms))

    async def _select(self, where: str, params: tuple[object, ...]) -> list[CallRecord]:
        sql = _SELECT + where + " ORDER BY created_ms"
        return await self._reads.run(lambda c: [CallRecord(*row) for row in c.execute(sql, params)])


EXECUTING = "executing"
# what retention may drop; what stays: pending, approved and executing calls, which a run or a
# human still needs, and outcome_unknown ones until a human has reconciled them
FINAL_STATES = ("done", "tool_error", "failed", "denied", "expired", "cancelled", "reconciled")
_MARK = (  # the column names are constants
    "UPDATE calls SET state = 'outcome_unknown', updated_ms = ? "  # noqa: S608
    f"WHERE state = 'executing' RETURNING {', '.join(CALL_COLUMNS)}"
)
_PRUNE = (
    "DELETE FROM calls WHERE rowid IN (SELECT rowid FROM calls WHERE state IN "  # noqa: S608
    f"({', '.join('?' * len(FINAL_STATES))}) AND updated_ms < ? LIMIT ?)"
)


def _first(records: list[CallRecord]) -> CallRecord | None:
    return records[0] if records else None
