"""All SQL in one place: the embedded SQLite database and its group-committing writer thread.

One thread owns the connection. Callers hand it small jobs (a function of the connection); it
runs every job that is waiting in one transaction, commits once, and only then resolves the
callers' futures. So an ``await store.run(...)`` that returns means the write is durable, and
under load one fsync covers many calls (group commit). A job that fails is rolled back alone
(a savepoint per job); a commit that fails fails every job in the batch.

Nothing above this module sees ``sqlite3``: failures become ``StoreError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Durability = Literal["full", "normal"]

MIGRATIONS: list[str] = [
    # 1: nonces and the first audit table
    """
    CREATE TABLE nonces (
        nonce TEXT PRIMARY KEY,
        expires_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX nonces_expiry ON nonces (expires_at_ms);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        rpc TEXT NOT NULL,
        agent TEXT NOT NULL,
        key_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        task_id TEXT NOT NULL,
        intent TEXT NOT NULL,
        args_digest TEXT NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        upstream_status INTEGER,
        latency_us INTEGER NOT NULL,
        policy_hash TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_call ON audit (call_id);
    CREATE INDEX audit_agent_time ON audit (agent, ts_ms);
    """,
]


class StoreError(Exception):
    """The database could not do what was asked (locked, read-only, full, corrupt)."""


@dataclass(frozen=True)
class AuditRow:
    """One audit record as stored."""

    ts_ms: int
    call_id: str
    rpc: str
    agent: str
    key_id: str
    tool: str
    task_id: str
    intent: str
    args_digest: str
    decision: str
    reason: str
    upstream_status: int | None
    latency_us: int
    policy_hash: str
    detail: str


_AUDIT_COLUMNS = tuple(AuditRow.__dataclass_fields__)
# The column names are constants and every value is bound: no injection path.
_INSERT_AUDIT = (
    f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})"
)


@dataclass
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any] | None


_STOP = _Job(lambda conn: None, None)


class Store:
    """The broker's SQLite database: schema, group commit, and every query the broker makes."""

    def __init__(self, path: Path, *, durability: Durability = "full", max_batch: int = 256):
        self.path = path
        self._durability = durability
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating and migrating if needed) and start the writer thread."""
        try:
            self._conn = connect(self.path, self._durability)
            migrate(self._conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None
        self._thread = threading.Thread(target=self._writer, name="store-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Finish queued jobs, stop the writer thread and close the connection."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- running jobs ----------------------------------------------------------------------

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in the next group commit; returns once it is committed (durable)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(work, future))
        return await future

    def submit(self, work: Callable[[sqlite3.Connection], Any]) -> None:
        """Queue ``work`` without waiting; it commits with the next batch, before anything
        queued after it is reported durable."""
        self._queue.put(_Job(work, None))

    def _writer(self) -> None:
        conn = self._conn
        assert conn is not None
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(job is _STOP for job in batch)
            self._commit(conn, [job for job in batch if job is not _STOP])

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        if not batch:
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                outcomes.append(_run_in_savepoint(conn, job))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            failure = StoreError(f"database write failed: {exc}")
            outcomes = [(False, failure)] * len(batch)
        _deliver(batch, outcomes)

    # -- nonces ------------------------------------------------------------------------------

    def record_nonce(self, nonce: str, expires_at_ms: int) -> None:
        """Remember a nonce until it expires; durable with the next commit."""
        self.submit(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO nonces (nonce, expires_at_ms) VALUES (?, ?)",
                (nonce, expires_at_ms),
            )
        )

    def prune_nonces(self, now_ms: int) -> None:
        """Forget nonces whose window has passed."""
        self.submit(lambda c: c.execute("DELETE FROM nonces WHERE expires_at_ms < ?", (now_ms,)))

    def live_nonces(self, now_ms: int) -> dict[str, int]:
        """Nonces still inside their window (read at start, before the writer runs)."""
        with _reader(self.path) as conn:
            rows = conn.execute(
                "SELECT nonce, expires_at_ms FROM nonces WHERE expires_at_ms >= ?", (now_ms,)
            )
            return dict(rows.fetchall())

    # -- audit -------------------------------------------------------------------------------

    async def append_audit(self, row: AuditRow) -> None:
        """Append one audit record; returns when it is durable."""
        values = tuple(getattr(row, name) for name in _AUDIT_COLUMNS)
        await self.run(lambda c: c.execute(_INSERT_AUDIT, values))


def read_audit(path: Path, call_id: str | None = None) -> list[AuditRow]:
    """Audit rows in order, all or for one call (for tools and tests, on their own connection)."""
    with _reader(path) as conn:
        columns = ", ".join(_AUDIT_COLUMNS)
        if call_id is None:
            rows = conn.execute(f"SELECT {columns} FROM audit ORDER BY seq")  # noqa: S608
        else:
            rows = conn.execute(
                f"SELECT {columns} FROM audit WHERE call_id = ? ORDER BY seq",  # noqa: S608
                (call_id,),
            )
        return [AuditRow(*row) for row in rows.fetchall()]


def connect(path: Path, durability: Durability = "full") -> sqlite3.Connection:
    """A connection in WAL mode with explicit transactions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={durability.upper()}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to date, one numbered step at a time."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except sqlite3.Error:
            _rollback(conn)
            raise


class _reader:
    """A short-lived read-only connection (``with _reader(path) as conn``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the database {self.path}: {exc}") from None
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _run_in_savepoint(conn: sqlite3.Connection, job: _Job) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT job")
    try:
        result = job.work(conn)
    except Exception as exc:  # a job's failure is its caller's; the writer thread goes on
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        if isinstance(exc, sqlite3.Error):
            return False, StoreError(f"database write failed: {exc}")
        return False, exc
    conn.execute("RELEASE job")
    return True, result


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # no transaction was open: nothing to undo
        conn.execute("ROLLBACK")


def _deliver(batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for job, (ok, value) in zip(batch, outcomes, strict=True):
        if job.future is not None:
            by_loop.setdefault(job.future.get_loop(), []).append((job.future, ok, value))
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, results)


def _resolve(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
