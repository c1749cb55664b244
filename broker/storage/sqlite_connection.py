"""SQLite connections: how the broker opens its files, migrates them, reads them off the
event loop, and makes what it committed durable.

Every connection is in WAL mode with ``synchronous=NORMAL`` and explicit transactions. Reads
run on a thread of their own (``Reads``), on a connection of their own: WAL lets them see every
committed write without waiting for the writer, and the event loop never blocks on them.
Nothing above the storage package sees ``sqlite3``: failures become ``StoreError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from broker.storage.records import StoreError

T = TypeVar("T")
Migration = str | Callable[[sqlite3.Connection], None]

# Writes run on the event loop, and a call waits for its audit record: a locked database must
# fail fast (the caller gets AUDIT_UNAVAILABLE), not hold everything up.
BUSY_TIMEOUT_S = 0.2
# A reader (or a command-line write) waits this long for a writer, which holds its lock for
# milliseconds at a time, before it gives up and says the database is locked.
READ_BUSY_TIMEOUT_S = 5.0


def connect(path: Path, *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """A connection in WAL mode (synchronous=NORMAL) with explicit transactions, usable from
    the thread that opened it and from a helper thread the caller runs it on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=busy_timeout, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection, steps: Sequence[Migration]) -> None:
    """Bring the schema up to date, one numbered step at a time (each its own transaction)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(steps[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if callable(script):
                script(conn)
            for statement in script.split(";") if isinstance(script, str) else ():
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except sqlite3.Error:
            rollback(conn)
            raise


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A short-lived read-only connection; StoreError when there is no database there."""
    if not path.exists():  # connecting would make an empty one
        raise no_database(path)
    try:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=READ_BUSY_TIMEOUT_S, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the database {path}: {exc}") from None
    try:
        yield conn
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the database {path}: {exc}") from None
    finally:
        conn.close()


class Reads:
    """Runs queries on a helper thread with a connection of its own, so that no read blocks
    the event loop. Opened lazily (the database may not exist until the broker makes it)."""

    def __init__(self, path: Path, *, read_only: bool = True) -> None:
        self.path = path
        self._read_only = read_only
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reads")
        self._conn: sqlite3.Connection | None = None  # used on the helper thread only

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` on the helper thread; sqlite3 errors become StoreError."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._open()
            return work(self._conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the database {self.path}: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise no_database(self.path)
        if not self._read_only:
            return connect(self.path, busy_timeout=READ_BUSY_TIMEOUT_S)
        return sqlite3.connect(
            f"file:{self.path}?mode=ro",
            uri=True,
            timeout=READ_BUSY_TIMEOUT_S,
            check_same_thread=False,
        )

    def close(self) -> None:
        """Close the connection and stop the thread."""
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class WalSync:
    """fsyncs the write-ahead log file (and, when it is new, its folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def sync(self) -> None:
        """Make what is committed durable; OSError when the disk refuses."""
        current = os.stat(self.path)
        if self._fd is None or os.fstat(self._fd).st_ino != current.st_ino:
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)  # the log file's own directory entry must be durable too
            finally:
                os.close(folder)
        os.fsync(self._fd)

    def close(self) -> None:
        """Let go of the log file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def rollback(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if there is one."""
    with contextlib.suppress(sqlite3.Error):  # no transaction was open: nothing to undo
        conn.execute("ROLLBACK")


def no_database(path: Path) -> StoreError:
    """The error for a database file that is not there."""
    return StoreError(f"there is no database at {path} (has the broker run here?)")
