"""Queued writes to PostgreSQL: budget use, outside values and text, a secret's last use.

Nobody waits for them one by one; one flush at a time writes everything queued in one
transaction (rows with the same statement in one ``executemany``, which psycopg pipelines),
and ``settle`` waits for what was queued before it: the audit record of the call that queued
them does, so they are committed before its answer leaves. Lazy rows (taint) are waited for
only by ``settle(lazy=True)``, which the ``confirm`` stage calls before it decides a write.

A batch that fails fails the settles waiting on it (the call is refused: fail closed). Its
lazy rows are not dropped: they go back in the queue and are written with the next batch, so
a write decided later still sees every outside value (its settle waits for them, or fails).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from broker.storage.pg_connection import Connection, PgDatabase
from broker.storage.records import StoreError

log = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed batch, lazy rows are tried again this soon (or with new work)


@dataclass
class _Rows:
    """Rows for one statement, and whether a plain settle skips them."""

    sql: str
    rows: list[Sequence[Any]]
    lazy: bool = False


@dataclass
class _Settle:
    future: asyncio.Future[None]


@dataclass
class _Batch:
    rows: list[_Rows] = field(default_factory=list)
    settles: list[_Settle] = field(default_factory=list)


class QueuedWrites:
    """The write-behind queue of one PostgreSQL database."""

    def __init__(self, database: PgDatabase) -> None:
        self._database = database
        self._pending = _Batch()
        self._flush: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._owed = 0  # groups of rows queued or in flight that a plain settle waits for

    def queue(self, sql: str, values: Sequence[Any], *, lazy: bool = False) -> None:
        """Write a row with the next batch."""
        self.queue_many(sql, [values], lazy=lazy)

    def queue_many(self, sql: str, rows: Sequence[Sequence[Any]], *, lazy: bool = False) -> None:
        """Write rows with one statement in the next batch."""
        if self._closed:
            raise StoreError("the database is closed")
        if rows:
            self._pending.rows.append(_Rows(sql, list(rows), lazy))
            self._owed += not lazy
            self._start()

    def settle(self, *, lazy: bool = False) -> asyncio.Future[None] | None:
        """None when nothing is queued (nothing but lazy rows, unless ``lazy``); else a future
        done once everything queued so far is committed. A failed batch fails it."""
        busy = self._flush is not None or self._pending.rows
        if not self._owed and not (lazy and busy):
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.settles.append(_Settle(future))
        self._start()
        return future

    async def close(self) -> None:
        """Write what is queued (lazy rows too), then refuse more."""
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        while self._flush is not None:
            await asyncio.shield(self._flush)
        if self._pending.rows or self._pending.settles:
            await self._write_pending()

    def _start(self) -> None:
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._flush_pending())

    async def _flush_pending(self) -> None:
        try:
            while self._pending.rows or self._pending.settles:
                if not await self._write_pending():
                    break
        finally:
            self._flush = None

    async def _write_pending(self) -> bool:
        batch, self._pending = self._pending, _Batch()
        try:
            if batch.rows:
                await self._database.run(lambda conn: _write(conn, batch.rows))
        except StoreError as exc:
            self._owed -= sum(not rows.lazy for rows in batch.rows)
            for settle in batch.settles:
                if not settle.future.done():
                    settle.future.set_exception(exc)
            lazy = [rows for rows in batch.rows if rows.lazy]
            if lazy:  # kept: a write decided later must see them
                log.warning("outside values not stored yet, will retry: %s", exc)
                self._pending.rows[:0] = lazy
            if not self._closed and (self._pending.rows or self._pending.settles):
                self._retry = asyncio.get_running_loop().call_later(RETRY_S, self._start)
            return False
        self._owed -= sum(not rows.lazy for rows in batch.rows)
        for settle in batch.settles:
            if not settle.future.done():
                settle.future.set_result(None)
        return True


async def _write(conn: Connection, batches: list[_Rows]) -> None:
    async with conn.cursor() as cursor:
        for sql, group in groupby(batches, key=lambda rows: rows.sql):
            await cursor.executemany(sql, [row for rows in group for row in rows.rows])
