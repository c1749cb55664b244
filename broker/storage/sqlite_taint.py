"""Taint in SQLite: outside values (``taint``) and outside text (``outside_text``) of broker.db,
per agent and task."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from broker.storage.group_commit import LOOP_BATCH_ROWS, GroupCommit, prune_in_batches
from broker.storage.records import Source, TaintRow, TextSegment
from broker.storage.sqlite_connection import Reads

_ADD = (
    "INSERT OR IGNORE INTO taint (agent, task_id, kind, value, origin, ts_ms) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_ADD_TEXT = (
    "INSERT INTO outside_text (agent, task_id, source, origin, marks, text, chars, at_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# the agent's rows of one source, newest first, beyond the newest ``keep`` characters
_DROP_OLDEST = """
DELETE FROM outside_text WHERE id IN (
    SELECT id FROM (
        SELECT id, SUM(chars) OVER (ORDER BY id DESC) AS kept
        FROM outside_text WHERE agent = ? AND source = ?
    ) WHERE kept > ?
)
"""
_LISTING = (
    "SELECT id, source FROM outside_text WHERE agent = ? AND task_id = ? UNION "
    "SELECT id, source FROM outside_text WHERE agent = ? AND source = 'untrusted' "
    "AND at_ms >= ? ORDER BY id"
)
# a text this many characters long weighs as a row: a big answer's is written off the loop
_CHARS_PER_ROW = 2000
_PRUNE_ROWS = LOOP_BATCH_ROWS  # a prune drops megabytes: a big batch
_PRUNE_VALUES = (
    "DELETE FROM taint WHERE (agent, task_id, kind, value) IN (SELECT agent, task_id, kind, "
    "value FROM taint WHERE ts_ms < ? LIMIT ?)"
)
_PRUNE_TEXT = (
    "DELETE FROM outside_text WHERE id IN (SELECT id FROM outside_text WHERE at_ms < ? LIMIT ?)"
)
_TEXTS = "SELECT id, task_id, source, origin, marks, text, at_ms FROM outside_text WHERE id IN "


class SqliteTaint:
    """The TaintStore of the SQLite backend."""

    def __init__(self, writes: GroupCommit, reads: Reads) -> None:
        self._writes = writes
        self._reads = reads

    async def values(self, agent: str, task_id: str, since_ms: int) -> list[TaintRow]:
        """Every outside value seen in this agent's task, and in its other tasks since
        ``since_ms``."""
        query = (
            "SELECT kind, value, origin FROM taint WHERE agent = ? AND task_id = ? UNION "
            "SELECT kind, value, origin FROM taint WHERE agent = ? AND ts_ms >= ?"
        )
        values = (agent, task_id, agent, since_ms)
        rows = await self._reads.run(lambda c: c.execute(query, values).fetchall())
        return [TaintRow(*row) for row in rows]

    def add(self, agent: str, task_id: str, rows: Sequence[TaintRow], now_ms: int) -> None:
        """Queued (all of them as one job), and not waited for by the call's answer
        (``settle`` before deciding a write)."""
        values = [(agent, task_id, r.kind, r.value, r.origin, now_ms) for r in rows]
        if values:
            self._writes.queue_many(_ADD, values, lazy=True)

    def add_text(self, agent: str, segment: TextSegment) -> None:
        """Queued, and not waited for by the call's answer (``settle`` before deciding a
        write): rows of many calls go in with one statement."""
        row = (
            agent,
            segment.task_id,
            segment.source,
            segment.origin,
            json.dumps(segment.marks),
            segment.text,
            len(segment.text),
            segment.at_ms,
        )
        weight = 1 + len(segment.text) // _CHARS_PER_ROW
        self._writes.queue(_ADD_TEXT, row, rows=weight, lazy=True)

    def prune_text(self, agent: str, source: Source, keep_chars: int) -> None:
        """Queued: drop the agent's oldest text of ``source`` beyond ``keep_chars``."""
        values = (agent, source, keep_chars)
        self._writes.queue_job(lambda conn: conn.execute(_DROP_OLDEST, values), rows=_PRUNE_ROWS)

    async def text_chars(self, agent: str, source: Source) -> int:
        """How many characters of the agent's text of ``source`` are kept."""
        return await self._reads.run(lambda conn: _chars(conn, agent, source))

    async def text_ids(self, agent: str, task_id: str, since_ms: int) -> list[tuple[int, str]]:
        """(id, source), oldest first, of the task's segments and of the agent's untrusted
        segments since ``since_ms`` in any task."""
        values = (agent, task_id, agent, since_ms)
        rows = await self._reads.run(lambda c: c.execute(_LISTING, values).fetchall())
        return [(int(id_), str(source)) for id_, source in rows]

    async def prune(self, before_ms: int) -> int:
        """Drop values and text seen before ``before_ms``, in batches."""
        values = await prune_in_batches(self._writes, _PRUNE_VALUES, (before_ms,))
        return values + await prune_in_batches(self._writes, _PRUNE_TEXT, (before_ms,))

    async def texts(self, ids: Sequence[int]) -> list[TextSegment]:
        """The segments with these ids (those still kept), oldest first."""
        if not ids:
            return []
        query = _TEXTS + f"({','.join('?' * len(ids))}) ORDER BY id"
        rows = await self._reads.run(lambda c: c.execute(query, tuple(ids)).fetchall())
        return [
            TextSegment(source, origin, text, parse_marks(marks), task_id, at_ms, id_)
            for id_, task_id, source, origin, marks, text, at_ms in rows
        ]


def _chars(conn: sqlite3.Connection, agent: str, source: str) -> int:
    query = "SELECT COALESCE(SUM(chars), 0) FROM outside_text WHERE agent = ? AND source = ?"
    return int(conn.execute(query, (agent, source)).fetchone()[0])


def parse_marks(stored: str) -> tuple[tuple[int, str], ...]:
    """A segment's marks as stored (JSON)."""
    return tuple((int(offset), str(path)) for offset, path in json.loads(stored))
