"""Group commit for the broker's SQLite database: many writes, one transaction, one fsync.

Writers on the event loop add rows (or small jobs) to a pending list and await them. One flush
at a time writes everything pending in one transaction and commits it; then, with durability
``fsync`` (the default), a helper thread fsyncs the write-ahead log, and only then are the
waiting futures resolved. Under load one fsync covers many writes.

Why this shape, measured (BENCHMARKS.md): handing every transaction to a writer thread cost
about 400 us a call at concurrency 1, mostly thread wake-ups, not the disk. The transaction
itself (WAL, ``synchronous=NORMAL``, no fsync) takes tens of microseconds, so it runs inline on
the loop; only the fsync, which releases the GIL, leaves it (and a batch of many rows, such as
the outside values of a big page, which would hold the loop for milliseconds). NORMAL already
syncs the log before and the database after each checkpoint, so adding an fsync of the log
after each commit gives what ``synchronous=FULL`` gives. Durability ``process`` skips that
fsync: a row survives the broker being killed, not the machine losing power. SQLite's own
checkpoints (copying the log into the database, with two fsyncs) would run inside a commit
every ~200 commits and stall the loop for milliseconds; they are turned off, and the helper
thread checkpoints instead.

Rows that follow each other with the same statement are written with one ``executemany``. A
job or group that fails is rolled back alone (a savepoint each); a commit that fails fails the
whole batch.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal, TypeVar

from broker.storage.records import StoreError
from broker.storage.sqlite_connection import (
    BUSY_TIMEOUT_S,
    Migration,
    WalSync,
    connect,
    migrate,
    rollback,
)

T = TypeVar("T")
Durability = Literal["fsync", "process"]
# Copy the log into the database every this many commits: SQLite's default is every 1,000
# pages, and a commit here writes a few.
WAL_CHECKPOINT_COMMITS = 200
# A batch of at least this many rows is written on the helper thread (sqlite3 lets go of the
# GIL while it works), not on the loop: ~1.5 us a row would stall every other call.
LOOP_BATCH_ROWS = 500

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Pending:
    """A row to insert (``sql`` and ``values``) or a job (``work``), and who waits for it."""

    future: asyncio.Future[Any]
    sql: str = ""
    values: Sequence[Any] = ()
    work: Callable[[sqlite3.Connection], Any] | None = None
    committed_only: bool = False  # resolve once committed, before the fsync
    rows: int = 1  # how many rows it writes (a batch of many is written off the loop)
    # settle does not wait for it, and its batch is not fsynced for it: the next durable
    # settle (or write) puts it on disk with its own
    lazy: bool = False


class GroupCommit:
    """The write side of one SQLite file: a connection used on the event loop between awaits,
    the pending writes, and a helper thread for the fsync and the log's checkpoints."""

    def __init__(self, conn: sqlite3.Connection, path: Path, durability: Durability) -> None:
        self._conn = conn
        self._durability = durability
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="sqlite-fsync"
        )
        self._wal = WalSync(Path(f"{path}-wal"))
        self._checkpointer = _Checkpointer(path)
        self._pending: list[_Pending] = []
        self._flush: asyncio.Task[None] | None = None
        self._commits = 0
        self._owed = 0  # items queued or in flight that settle waits for

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in the next group commit; returns once it is committed (durable)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(future, work=work))
        return await future

    def queue(self, sql: str, values: Sequence[Any], *, rows: int = 1, lazy: bool = False) -> None:
        """Write a row with the next batch; nobody waits for it (``settle`` does, unless it is
        ``lazy``: a row whose loss in a crash is harmless). ``rows`` says how much it weighs
        (a big row counts as many: its batch is written off the loop)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # a failure shows in the audit record that waits for the same batch (settle)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        item = _Pending(future, sql=sql, values=values, rows=rows, lazy=lazy, committed_only=lazy)
        self._enqueue(item)

    def queue_many(self, sql: str, rows: Sequence[Sequence[Any]], *, lazy: bool = False) -> None:
        """Write many rows with one statement in the next batch, as one job (cheap to queue
        however many); nobody waits for them (``settle`` does, unless they are ``lazy``)."""
        self.queue_job(lambda conn: conn.executemany(sql, rows), rows=len(rows), lazy=lazy)

    def queue_job(
        self, work: Callable[[sqlite3.Connection], Any], *, rows: int = 1, lazy: bool = False
    ) -> None:
        """Run ``work`` in the next batch; nobody waits for it (``settle`` does, unless it is
        ``lazy``). ``rows`` says how much it writes: a batch of many is written off the
        loop."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._enqueue(_Pending(future, work=work, rows=rows, lazy=lazy, committed_only=lazy))

    def settle(self, *, durable: bool, lazy: bool = False) -> asyncio.Future[None] | None:
        """None when nothing is pending (nothing but lazy rows, unless ``lazy``); else a
        future done once everything queued so far is committed (and, with ``durable``,
        fsynced). A failed batch fails it."""
        if not self._owed and not (lazy and (self._pending or self._flush is not None)):
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(future, work=_nothing, committed_only=not durable))
        return future

    async def close(self) -> None:
        """Let pending writes commit, then stop the helper thread and close the connection."""
        if self._flush is not None:
            await asyncio.shield(self._flush)
        if self._executor is not None:
            self._executor.submit(self._checkpointer.close).result()
            self._executor.shutdown(wait=True)
            self._executor = None
        self._conn.close()
        self._wal.close()

    def _enqueue(self, item: _Pending) -> None:
        if self._executor is None:
            raise StoreError("the database is closed")
        self._pending.append(item)
        if not item.lazy:
            self._owed += 1
            item.future.add_done_callback(self._paid)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._flush_pending())

    def _paid(self, _: asyncio.Future[Any]) -> None:
        self._owed -= 1

    async def _flush_pending(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                if sum(item.rows for item in batch) < LOOP_BATCH_ROWS:
                    written = self._write(batch)  # tens of microseconds: inline is cheaper
                else:  # a big one (a page's outside values) would hold the loop for ms
                    written = await loop.run_in_executor(self._executor, self._write, batch)
                results = list(zip(batch, written, strict=True))
                # failures, and writes that only need to be committed, are answered now
                _resolve([r for r in results if r[0].committed_only or not r[1][0]])
                later = [r for r in results if not r[0].committed_only and r[1][0]]
                if later and self._durability == "fsync":
                    try:
                        await loop.run_in_executor(self._executor, self._wal.sync)
                    except OSError as exc:
                        failed = (False, StoreError(f"fsync of the log failed: {exc}"))
                        later = [(item, failed) for item, _ in later]
                _resolve(later)
                self._commits += 1
                if self._commits >= WAL_CHECKPOINT_COMMITS:
                    self._commits = 0
                    await loop.run_in_executor(self._executor, self._checkpointer.run)
        finally:
            self._flush = None

    def _write(self, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        conn = self._conn
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for key, group in groupby(batch, key=lambda item: item.sql or id(item)):
                items = list(group)
                outcomes.extend(
                    _write_group(conn, items)
                    if isinstance(key, str)
                    else [_run_job(conn, items[0])]
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(conn)
            return [(False, StoreError(f"database write failed: {exc}"))] * len(batch)
        return outcomes


class _Checkpointer:
    """Copies the write-ahead log into the database on the helper thread, with a connection
    of its own, while the flush waits: writes queue up meanwhile (the loop runs on), and with
    no writer in between the whole log is copied, so the next write starts it again from the
    top. A failed checkpoint is logged and tried again later: the log only grows meanwhile,
    nothing is lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None  # used on the helper thread only

    def run(self) -> None:
        try:
            if self._conn is None:
                self._conn = connect(self.path, busy_timeout=0)
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("checkpoint of the database log failed, will retry: %s", exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_for_writes(
    path: Path, steps: Sequence[Migration], busy_timeout: float = BUSY_TIMEOUT_S
) -> sqlite3.Connection:
    """The write connection of a database, migrated, with SQLite's own copying of the log
    into the database off (the group commit's helper thread does it between commits)."""
    conn = connect(path, busy_timeout=busy_timeout)
    try:
        migrate(conn, steps)
        conn.execute("PRAGMA wal_autocheckpoint=0")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _resolve(results: list[tuple[_Pending, tuple[bool, Any]]]) -> None:
    for item, (ok, value) in results:
        if item.future.done():
            continue  # the caller went away; the row is written all the same
        if ok:
            item.future.set_result(value)
        else:
            item.future.set_exception(value)


def _write_group(conn: sqlite3.Connection, items: list[_Pending]) -> list[tuple[bool, Any]]:
    """Rows with one statement: one executemany; if it fails, row by row to find the bad one."""
    conn.execute("SAVEPOINT rows")
    try:
        conn.executemany(items[0].sql, [item.values for item in items])
    except sqlite3.Error:
        conn.execute("ROLLBACK TO rows")
        conn.execute("RELEASE rows")
        return [_run_job(conn, item) for item in items]
    conn.execute("RELEASE rows")
    return [(True, None)] * len(items)


def _run_job(conn: sqlite3.Connection, item: _Pending) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT job")
    try:
        result = item.work(conn) if item.work else conn.execute(item.sql, item.values)
    except Exception as exc:  # a job's failure is its caller's; the batch goes on
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        if isinstance(exc, sqlite3.Error):
            return False, StoreError(f"database write failed: {exc}")
        return False, exc
    conn.execute("RELEASE job")
    return True, None if item.sql else result


def _nothing(conn: sqlite3.Connection) -> None:
    """A job that writes nothing: awaiting it awaits the commit of what was queued before."""


PRUNE_BATCH = 1000  # rows one retention statement deletes: a few ms of the loop at most


async def prune_in_batches(writes: GroupCommit, sql: str, params: tuple[object, ...]) -> int:
    """Run ``sql`` (a DELETE of at most ``?`` rows, the last parameter) until it deletes
    fewer than a batch; how many rows in all. Each batch is a short transaction of its own, so
    a large sweep never holds the database for long."""
    total = 0
    while True:
        deleted = await writes.run(lambda conn: conn.execute(sql, (*params, PRUNE_BATCH)).rowcount)
        total += deleted
        if deleted < PRUNE_BATCH:
            return total
