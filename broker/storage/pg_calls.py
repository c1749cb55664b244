"""Stored calls in PostgreSQL (the ``calls`` table): writes and pending approvals.

The same compare-and-set as on SQLite: every state change is one ``UPDATE ... WHERE state =
ANY(...)``, which PostgreSQL runs under a row lock, so of two replicas deciding the same call
at once exactly one sees its row change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from broker.storage.pg_connection import Connection, PgDatabase, delete_in_batches, no_nul
from broker.storage.pg_leases import DB_NOW_MS, LEASE_MS
from broker.storage.records import CALL_COLUMNS, CallRecord, check_changes
from broker.storage.sqlite_calls import EXECUTING, FINAL_STATES

# The column names are constants and every value is bound: no injection path.
_COLUMNS = ", ".join(CALL_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM calls "  # noqa: S608
_INSERT = (
    f"INSERT INTO calls ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(CALL_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT DO NOTHING"
)
# writes executing in a process whose lease ran out (or that stopped and let go of it)
_MARK = (
    "UPDATE calls SET state = 'outcome_unknown', updated_ms = %s "  # noqa: S608
    "WHERE state = 'executing' AND owner NOT IN (SELECT id FROM replicas "
    f"WHERE heartbeat_ms >= {DB_NOW_MS} - %s) RETURNING {_COLUMNS}"
)
_PRUNE = (
    "DELETE FROM calls WHERE call_id IN (SELECT call_id FROM calls WHERE state = ANY(%s) "
    "AND updated_ms < %s LIMIT %s)"
)


class PgCalls:
    """The CallStore of the PostgreSQL backend."""

    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    async def insert(self, record: CallRecord) -> bool:
        """Store a new call; False when (agent, idempotency_key) (or its id) is taken."""
        values = tuple(_storable(getattr(record, name)) for name in CALL_COLUMNS)

        async def insert(conn: Connection) -> bool:
            cursor = await conn.execute(_INSERT, values)
            return cursor.rowcount == 1

        return await self._db.run(insert)

    async def get(self, call_id: str) -> CallRecord | None:
        """One call by id."""
        return _first(await self._select("WHERE call_id = %s", (call_id,)))

    async def find(self, agent: str, idempotency_key: str) -> CallRecord | None:
        """The call an agent made with this idempotency key."""
        where = "WHERE agent = %s AND idempotency_key = %s"
        return _first(await self._select(where, (agent, idempotency_key)))

    async def transition(
        self, call_id: str, from_states: Sequence[str], to_state: str, **changes: object
    ) -> bool:
        """Compare-and-set: move a call to ``to_state`` only if it is in one of
        ``from_states``; False when another decision came first."""
        check_changes(changes)
        sets = ", ".join(["state = %s", *[f"{name} = %s" for name in changes]])
        sql = f"UPDATE calls SET {sets} WHERE call_id = %s AND state = ANY(%s)"  # noqa: S608
        params = (to_state, *map(_storable, changes.values()), call_id, list(from_states))
        return await self._db.run(lambda conn: _changed(conn, sql, params))

    async def update(self, call_id: str, **changes: object) -> None:
        """Set fields of a call whatever its state (bookkeeping: Slack message, reminders)."""
        check_changes(changes)
        sets = ", ".join(f"{name} = %s" for name in changes)
        sql = f"UPDATE calls SET {sets} WHERE call_id = %s"  # noqa: S608
        await self._db.run(lambda conn: _changed(conn, sql, (*changes.values(), call_id)))

    async def in_states(
        self, states: Sequence[str], *, agent: str | None = None, updated_since_ms: int = 0
    ) -> list[CallRecord]:
        """Calls in one of ``states`` (of ``agent`` only), plus those updated since then."""
        where = "state = ANY(%s)"
        params: list[object] = [list(states)]
        if agent is not None:
            where += " AND agent = %s"
            params.append(agent)
        if updated_since_ms:
            where = f"({where}) OR updated_ms >= %s"
            params.append(updated_since_ms)
        return await self._select(f"WHERE {where}", tuple(params))

    async def expiring(self, now_ms: int) -> list[CallRecord]:
        """Pending calls whose expiry has come."""
        return await self._select("WHERE state = 'pending' AND expires_at_ms <= %s", (now_ms,))

    async def unreminded(self, now_ms: int) -> list[CallRecord]:
        """Pending calls past their escalation time, not reminded yet."""
        where = "WHERE state = 'pending' AND reminded = 0 AND escalate_at_ms <= %s"
        return await self._select(where, (now_ms,))

    async def count(self, state: str | None = None) -> int:
        """How many calls are in ``state`` (or stored at all)."""

        async def count(conn: Connection) -> int:
            if state is None:
                cursor = await conn.execute("SELECT count(*) FROM calls")
            else:
                cursor = await conn.execute("SELECT count(*) FROM calls WHERE state = %s", (state,))
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._db.read(count)

    async def mark_unfinished(self, now_ms: int) -> list[CallRecord]:
        """Writes left ``executing`` by a process that is gone (its lease ran out, or it
        stopped) become ``outcome_unknown``, in one statement; returns them as they were.
        A live replica's running writes are left alone."""

        async def mark(conn: Connection) -> list[CallRecord]:
            cursor = await conn.execute(_MARK, (now_ms, LEASE_MS))
            return [replace(CallRecord(*row), state=EXECUTING) for row in await cursor.fetchall()]

        return await self._db.run(mark)

    async def prune(self, before_ms: int) -> int:
        """Drop final calls last changed before ``before_ms``, in batches (each a short
        transaction of its own)."""
        return await delete_in_batches(self._db, _PRUNE, (list(FINAL_STATES), before_ms))

    async def _select(self, where: str, params: tuple[object, ...]) -> list[CallRecord]:
        sql = _SELECT + where + " ORDER BY created_ms"

        async def select(conn: Connection) -> list[CallRecord]:
            cursor = await conn.execute(sql, params)
            return [CallRecord(*row) for row in await cursor.fetchall()]

        return await self._db.read(select)


async def _changed(conn: Connection, sql: str, params: Sequence[object]) -> bool:
    cursor = await conn.execute(sql, params)
    return cursor.rowcount == 1


def _storable(value: object) -> object:
    return no_nul(value) if isinstance(value, str) else value


def _first(records: list[CallRecord]) -> CallRecord | None:
    return records[0] if records else None
