"""Taint in PostgreSQL: outside values (``taint``) and outside text (``outside_text``), per
agent and task. Values and text are stored as UTF-8 bytes: they may hold U+0000 (the text's
separator is one), which a TEXT column refuses, and they are compared exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence

from broker.storage.pg_connection import Connection, PgDatabase, delete_in_batches
from broker.storage.pg_queue import QueuedWrites
from broker.storage.records import Source, TaintRow, TextSegment
from broker.storage.sqlite_taint import parse_marks

_ADD = (
    "INSERT INTO taint (agent, task_id, kind, value, origin, ts_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_ADD_TEXT = (
    "INSERT INTO outside_text (agent, task_id, source, origin, marks, text, chars, at_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
# the agent's rows of one source, newest first, beyond the newest ``keep`` characters
_DROP_OLDEST = """
DELETE FROM outside_text WHERE id IN (
    SELECT id FROM (
        SELECT id, SUM(chars) OVER (ORDER BY id DESC) AS kept
        FROM outside_text WHERE agent = %s AND source = %s
    ) AS newest_first WHERE kept > %s
)
"""
_VALUES = (
    "SELECT kind, value, origin FROM taint WHERE agent = %s AND task_id = %s UNION "
    "SELECT kind, value, origin FROM taint WHERE agent = %s AND ts_ms >= %s"
)
_LISTING = (
    "SELECT id, source FROM outside_text WHERE agent = %s AND task_id = %s UNION "
    "SELECT id, source FROM outside_text WHERE agent = %s AND source = 'untrusted' "
    "AND at_ms >= %s ORDER BY id"
)
_CHARS = "SELECT COALESCE(SUM(chars), 0) FROM outside_text WHERE agent = %s AND source = %s"
_TEXTS = (
    "SELECT id, task_id, source, origin, marks, text, at_ms FROM outside_text "
    "WHERE id = ANY(%s) ORDER BY id"
)
_PRUNE_VALUES = (
    "DELETE FROM taint WHERE (agent, task_id, kind, value) IN (SELECT agent, task_id, kind, "
    "value FROM taint WHERE ts_ms < %s LIMIT %s)"
)
_PRUNE_TEXT = (
    "DELETE FROM outside_text WHERE id IN (SELECT id FROM outside_text WHERE at_ms < %s LIMIT %s)"
)


class PgTaint:
    """The TaintStore of the PostgreSQL backend."""

    def __init__(self, database: PgDatabase, writes: QueuedWrites) -> None:
        self._db = database
        self._writes = writes

    async def values(self, agent: str, task_id: str, since_ms: int) -> list[TaintRow]:
        """Every outside value seen in this agent's task, and in its other tasks since
        ``since_ms``."""

        async def read(conn: Connection) -> list[TaintRow]:
            cursor = await conn.execute(_VALUES, (agent, task_id, agent, since_ms))
            return [
                TaintRow(kind, bytes(value).decode(), origin)
                for kind, value, origin in await cursor.fetchall()
            ]

        return await self._db.read(read)

    def add(self, agent: str, task_id: str, rows: Sequence[TaintRow], now_ms: int) -> None:
        """Queued, and not waited for by the call's answer (``settle`` before deciding a
        write)."""
        values = [(agent, task_id, r.kind, r.value.encode(), r.origin, now_ms) for r in rows]
        self._writes.queue_many(_ADD, values, lazy=True)

    def add_text(self, agent: str, segment: TextSegment) -> None:
        """Queued, and not waited for by the call's answer (``settle`` before deciding a
        write)."""
        row = (
            agent,
            segment.task_id,
            segment.source,
            segment.origin,
            json.dumps(segment.marks),
            segment.text.encode(),
            len(segment.text),
            segment.at_ms,
        )
        self._writes.queue(_ADD_TEXT, row, lazy=True)

    def prune_text(self, agent: str, source: Source, keep_chars: int) -> None:
        """Queued: drop the agent's oldest text of ``source`` beyond ``keep_chars``."""
        self._writes.queue(_DROP_OLDEST, (agent, source, keep_chars))

    async def text_chars(self, agent: str, source: Source) -> int:
        """How many characters of the agent's text of ``source`` are kept."""

        async def read(conn: Connection) -> int:
            cursor = await conn.execute(_CHARS, (agent, source))
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._db.read(read)

    async def text_ids(self, agent: str, task_id: str, since_ms: int) -> list[tuple[int, str]]:
        """(id, source), oldest first, of the task's segments and of the agent's untrusted
        segments since ``since_ms`` in any task."""

        async def read(conn: Connection) -> list[tuple[int, str]]:
            cursor = await conn.execute(_LISTING, (agent, task_id, agent, since_ms))
            return [(int(id_), str(source)) for id_, source in await cursor.fetchall()]

        return await self._db.read(read)

    async def texts(self, ids: Sequence[int]) -> list[TextSegment]:
        """The segments with these ids (those still kept), oldest first."""
        if not ids:
            return []

        async def read(conn: Connection) -> list[TextSegment]:
            cursor = await conn.execute(_TEXTS, (list(ids),))
            return [
                TextSegment(
                    source, origin, bytes(text).decode(), parse_marks(marks), task_id, at, id_
                )
                for id_, task_id, source, origin, marks, text, at in await cursor.fetchall()
            ]

        return await self._db.read(read)

    async def prune(self, before_ms: int) -> int:
        """Drop values and text seen before ``before_ms``, in batches."""
        values = await delete_in_batches(self._db, _PRUNE_VALUES, (before_ms,))
        return values + await delete_in_batches(self._db, _PRUNE_TEXT, (before_ms,))
