"""All SQL in one place: the embedded SQLite databases, written with group commit.

``broker.db`` holds the broker's state (calls, freezes, budgets, taint, secrets);
``audit.db`` beside it holds the audit trail, written by a process of its own
(``broker.audit_writer``, reached through ``broker.audit_pipe``), so the event loop does no
SQL, hashing or fsync for it.

For ``broker.db``, writers on the event loop add rows (or small jobs) to a pending list and
await them. One flush at a time writes everything pending in one transaction and commits it;
then, with durability ``fsync`` (the default), a helper thread fsyncs the write-ahead log, and
only then are the waiting futures resolved. Under load one fsync covers many writes.

Why this shape, measured (BENCHMARKS.md): handing every transaction to a writer thread cost
about 400 us a call at concurrency 1, mostly thread wake-ups, not the disk. The transaction
itself (WAL, ``synchronous=NORMAL``, no fsync) takes tens of microseconds, so it runs inline on
the loop; only the fsync, which releases the GIL, leaves it. NORMAL already syncs the log before
and the database after each checkpoint, so adding an fsync of the log after each commit gives
what ``synchronous=FULL`` gives. Durability ``process`` skips that fsync: a row survives the
broker being killed, not the machine losing power. SQLite's own checkpoints (copying the log
into the database, with two fsyncs) would run inside a commit every ~200 commits and stall the
loop for milliseconds; they are turned off, and the helper thread checkpoints instead.

Rows that follow each other with the same statement are written with one ``executemany``. A
job or group that fails is rolled back alone (a savepoint each); a commit that fails fails the
whole batch. Nothing above this module sees ``sqlite3``: failures become ``StoreError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

if TYPE_CHECKING:
    from broker.audit_pipe import AuditPipe

T = TypeVar("T")
Durability = Literal["fsync", "process"]
# Writes run on the event loop, and a call waits for its audit record: a locked database must
# fail fast (the caller gets AUDIT_UNAVAILABLE), not hold everything up.
BUSY_TIMEOUT_S = 0.2
# A prune (from the command line) waits this long for the audit writer, which holds its lock for
# milliseconds at a time, before it gives up and says the database is locked.
PRUNE_BUSY_TIMEOUT_S = 2.0
# Copy the log into the database every this many commits: SQLite's default is every 1,000
# pages, and a commit here writes a few.
WAL_CHECKPOINT_COMMITS = 200

log = logging.getLogger(__name__)

MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: the first audit table; accepted nonces live in it (see identity.ReplayGuard)
    """
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        rpc TEXT NOT NULL,
        agent TEXT NOT NULL,
        key_id TEXT NOT NULL,
        nonce TEXT NOT NULL,
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
    CREATE INDEX audit_time ON audit (ts_ms);
    CREATE INDEX audit_agent_time ON audit (agent, ts_ms);
    """,
    # 2: the arguments as the agent sent them, so a proposed policy can re-decide old calls
    """
    ALTER TABLE audit ADD COLUMN arguments TEXT NOT NULL DEFAULT '';
    """,
    # 3: secrets, encrypted (AES-256-GCM, the name bound as associated data); never plaintext
    """
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        last_used_ms INTEGER
    );
    """,
    # 4: calls that must outlive the request: writes (intent before, outcome after) and calls
    # waiting for a human; freezes (kill switches)
    """
    CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        key_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        task_id TEXT NOT NULL,
        intent TEXT NOT NULL,
        arguments TEXT NOT NULL,
        digest TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        state TEXT NOT NULL,
        why TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        escalate_at_ms INTEGER NOT NULL DEFAULT 0,
        expires_at_ms INTEGER NOT NULL DEFAULT 0,
        reminded INTEGER NOT NULL DEFAULT 0,
        decided_by TEXT NOT NULL DEFAULT '',
        decided_ms INTEGER NOT NULL DEFAULT 0,
        note TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL DEFAULT '',
        slack TEXT NOT NULL DEFAULT ''
    );
    CREATE UNIQUE INDEX calls_idempotency ON calls (agent, idempotency_key)
        WHERE idempotency_key != '';
    CREATE INDEX calls_state ON calls (state, expires_at_ms);
    CREATE TABLE freezes (
        agent TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        frozen_by TEXT NOT NULL,
        ts_ms INTEGER NOT NULL
    );
    """,
    # 5: budget use per scope (agent, task, agent and tool) and period (a UTC day, or a task)
    """
    CREATE TABLE budgets (
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        calls INTEGER NOT NULL,
        cost INTEGER NOT NULL,
        alerted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, period)
    ) WITHOUT ROWID;
    """,
    # 6: values that came from outside, per agent and task (the taint of untrusted content)
    """
    CREATE TABLE taint (
        agent TEXT NOT NULL,
        task_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        origin TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        PRIMARY KEY (agent, task_id, kind, value)
    ) WITHOUT ROWID;
    """,
    # 7: the audit trail becomes a hash chain of step records, with signed checkpoints
    """
    ALTER TABLE audit ADD COLUMN event TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN cost INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE audit ADD COLUMN result_digest TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN result_size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
    CREATE INDEX audit_task ON audit (task_id);
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        head_hash TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
    );
    """,
    lambda conn: _chain_existing(conn),
    # 9: the audit trail moves to audit.db, written by the audit writer process
    lambda conn: _move_audit_out(conn),
]

# audit.db: the audit trail (its own file, so its writer never waits for the broker's lock),
# built by the same steps that once built it in broker.db: the same columns in the same order
AUDIT_MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    MIGRATIONS[0],  # the audit table and its indexes
    MIGRATIONS[1],  # arguments
    MIGRATIONS[6],  # the chain's columns, the task index and the checkpoints
    # Keep the indexes the broker reads by (call id: show, time: digests, nonces, loops) and
    # drop those only `audit query --agent/--task` used: each index is one more page written
    # and copied with every commit; dropping these two cut the writer's CPU a call by a
    # quarter (BENCHMARKS.md). Such a query uses the time index with --since, else it scans.
    """
    DROP INDEX IF EXISTS audit_agent_time;
    DROP INDEX IF EXISTS audit_task;
    """,
]


def audit_database(database: Path) -> Path:
    """Where the audit trail of the broker database ``database`` lives (``audit.db`` beside
    it); given the audit database itself, the same path."""
    return database.with_name("audit.db")


_INSERT_CHECKPOINT = (
    "INSERT OR REPLACE INTO audit_checkpoints (seq, head_hash, ts_ms, kind, key_id, signature) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


class AuditLedger:
    """audit.db as the audit writer uses it (the chain's logic is the writer's, its SQL is
    here with all the rest): where the chain ends, records and checkpoints written in one
    transaction, the log fsynced and copied into the database. Failures become StoreError."""

    def __init__(self, database: Path) -> None:
        path = audit_database(database)
        try:
            self._conn = connect(path, busy_timeout=BUSY_TIMEOUT_S)
            migrate(self._conn, AUDIT_MIGRATIONS)
            self._conn.execute("PRAGMA wal_autocheckpoint=0")  # copy_log, between commits
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the audit database {path}: {exc}") from None
        self._wal = WalSync(Path(f"{path}-wal"))

    def head(self) -> tuple[tuple[int, str] | None, tuple[int, str, int] | None]:
        """(seq, hash) of the last record and (seq, head hash, ts_ms) of the last checkpoint."""
        last = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        mark = self._conn.execute(
            "SELECT seq, head_hash, ts_ms FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
        )
        record, checkpoint = last.fetchone(), mark.fetchone()
        return (
            (int(record[0]), str(record[1])) if record else None,
            (int(checkpoint[0]), str(checkpoint[1]), int(checkpoint[2])) if checkpoint else None,
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, rolled back (StoreError) if any of it fails."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(self._conn)
            raise StoreError(f"database write failed: {exc}") from None

    def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Chained records (every column, hash last), inside a transaction."""
        self._conn.executemany(_INSERT_AUDIT, rows)

    def insert_checkpoint(
        self, seq: int, head_hash: str, ts_ms: int, kind: str, key_id: str, signature: str
    ) -> None:
        """A signed checkpoint, inside a transaction."""
        self._conn.execute(_INSERT_CHECKPOINT, (seq, head_hash, ts_ms, kind, key_id, signature))

    def sync(self) -> None:
        """fsync the log: what is committed is then on disk."""
        try:
            self._wal.sync()
        except OSError as exc:
            raise StoreError(f"fsync of the audit log failed: {exc}") from None

    def copy_log(self) -> None:
        """Copy the log into the database (a failure only lets the log grow: logged)."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("copying the audit log into its database failed, will retry: %s", exc)

    def close(self) -> None:
        self._conn.close()
        self._wal.close()


def audit_checkpoint_rows(database: Path) -> list[tuple[int, str, int, str, str, str]]:
    """Every signed checkpoint beside ``database`` (seq, head_hash, ts_ms, kind, key_id,
    signature), oldest first, on a read-only connection."""
    with _reader(audit_database(database)) as conn:
        try:
            return conn.execute(
                "SELECT seq, head_hash, ts_ms, kind, key_id, signature FROM audit_checkpoints "
                "ORDER BY seq"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the audit checkpoints: {exc}") from None


def audit_chain(database: Path, from_seq: int) -> Iterator[tuple[Any, ...]]:
    """The records from ``from_seq`` on (every column, hash last), in chain order, streamed
    (a verify of millions of records holds one at a time)."""
    with _reader(audit_database(database)) as conn:
        try:
            yield from conn.execute(_SELECT_AUDIT + "WHERE seq >= ? ORDER BY seq", (from_seq,))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the audit trail: {exc}") from None


Sign = Callable[[int, str, int], tuple[str, str]]  # (seq, head hash, ts_ms) -> key id, signature


def prune_audit(
    database: Path, before_ms: int, sign: Sign
) -> tuple[int, tuple[int, str, int, str, str] | None]:
    """Delete the records older than ``before_ms`` and the checkpoints before the cut, in one
    transaction that leaves a signed "prune" checkpoint (an anchor) at the last record removed;
    (records removed, the anchor as seq, head_hash, ts_ms, key_id, signature)."""
    path = audit_database(database)
    if not path.exists():  # connecting would make an empty one
        raise _no_database(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=PRUNE_BUSY_TIMEOUT_S)
    try:
        conn.execute("BEGIN IMMEDIATE")
        cut = conn.execute(
            "SELECT seq, hash FROM audit WHERE ts_ms < ? ORDER BY seq DESC LIMIT 1", (before_ms,)
        ).fetchone()
        if cut is None:
            _rollback(conn)
            return 0, None
        seq, head = int(cut[0]), str(cut[1])
        now = int(time.time() * 1000)
        key_id, signature = sign(seq, head, now)
        conn.execute(_INSERT_CHECKPOINT, (seq, head, now, "prune", key_id, signature))
        removed = conn.execute("DELETE FROM audit WHERE seq <= ?", (seq,)).rowcount
        conn.execute("DELETE FROM audit_checkpoints WHERE seq < ?", (seq,))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        raise StoreError(f"cannot prune the audit trail: {exc}") from None
    finally:
        conn.close()
    return removed, (seq, head, now, key_id, signature)


def prepare_audit_database(database: Path) -> None:
    """Create or migrate the audit database (the broker does this at start)."""
    conn = connect(audit_database(database))
    try:
        migrate(conn, AUDIT_MIGRATIONS)
    finally:
        conn.close()


class StoreError(Exception):
    """The database could not do what was asked (locked, read-only, full, corrupt)."""


class AuditRow(NamedTuple):
    """One audit record as stored: a tuple in the table's column order, because one is built
    for every step of every request and sent to the audit writer as it is."""

    ts_ms: int
    call_id: str
    rpc: str
    agent: str
    key_id: str
    nonce: str  # accepted nonces only: the replay guard reloads them after a restart
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
    arguments: str = ""  # as sent (at most 64 KiB; longer ones are left out, the digest stays)
    event: str = ""  # the step: decided, executed, refused, pending, approved, denied, ...
    cost: int = 0  # cost units the call spent
    result_digest: str = ""  # SHA-256 of the redacted result_json
    result_size: int = 0  # its length in bytes
    seq: int = 0  # given by the store: the position in the chain
    prev_hash: str = ""  # given by the store: the hash of the record before
    hash: str = ""  # given by the store: SHA-256 over this record, prev_hash included


# Records of a step on a call's way (it arrived; it was decided to run it), not its outcome:
# one call's verdict is its final record, so counting and re-deciding leave these out.
STEP_EVENTS = ("received", "decided")
_AUDIT_COLUMNS = AuditRow._fields
AUDIT_COLUMNS = _AUDIT_COLUMNS  # the table's order: what record_hash covers, hash last
_CHAINED = len(_AUDIT_COLUMNS) - 3  # the broker supplies all but seq, prev_hash and hash
# The column names are constants and every value is bound: no injection path.
_INSERT_AUDIT = (
    f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})"
)


_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # made once: cheaper


def record_hash(values: Sequence[Any]) -> str:
    """SHA-256 (hex) over a record's canonical encoding: every column but ``hash`` itself, in
    the table's order (seq and prev_hash included), as compact JSON."""
    return hashlib.sha256(_CANONICAL.encode(list(values)).encode()).hexdigest()


def _chain_existing(conn: sqlite3.Connection) -> None:
    """Migration 7: give the records written before the chain existed their hashes."""
    previous = ""
    rows = conn.execute(f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit ORDER BY seq").fetchall()  # noqa: S608
    for row in rows:
        values = [*row[:-2], previous]
        digest = record_hash(values)
        conn.execute(
            "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?",
            (previous, digest, row[_AUDIT_COLUMNS.index("seq")]),
        )
        previous = digest


def _move_audit_out(conn: sqlite3.Connection) -> None:
    """Migration 9: copy the audit trail (records and checkpoints, hashes as they are) into
    audit.db and drop it here. Run again after a crash half way, it copies nothing twice."""
    files = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
    if files and files[0]:
        target = audit_database(Path(files[0]))
        prepare_audit_database(target)
        destination = connect(target)
        try:
            destination.execute("BEGIN IMMEDIATE")
            for table, columns in (
                ("audit", _AUDIT_COLUMNS),
                ("audit_checkpoints", ("seq", "head_hash", "ts_ms", "kind", "key_id", "signature")),
            ):
                names = ", ".join(columns)
                marks = ", ".join("?" * len(columns))
                cursor = conn.execute(f"SELECT {names} FROM {table} ORDER BY seq")  # noqa: S608
                while chunk := cursor.fetchmany(10_000):
                    destination.executemany(
                        f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})",  # noqa: S608
                        chunk,
                    )
            destination.execute("COMMIT")
        except sqlite3.Error:
            _rollback(destination)
            raise
        finally:
            destination.close()
    conn.execute("DROP TABLE audit")
    conn.execute("DROP TABLE audit_checkpoints")


@dataclass(frozen=True)
class CallRecord:
    """A call that outlives its request: a write (intent, then outcome) or a call that waits
    for a human. ``arguments`` is canonical JSON; ``digest`` binds what will execute."""

    call_id: str
    agent: str
    key_id: str
    tool: str
    task_id: str
    intent: str
    arguments: str
    digest: str
    idempotency_key: str
    state: str
    why: str
    created_ms: int
    updated_ms: int
    escalate_at_ms: int = 0
    expires_at_ms: int = 0
    reminded: int = 0
    decided_by: str = ""
    decided_ms: int = 0
    note: str = ""
    outcome: str = ""
    slack: str = ""


_CALL_COLUMNS = tuple(CallRecord.__dataclass_fields__)
_INSERT_CALL = (
    f"INSERT INTO calls ({', '.join(_CALL_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_CALL_COLUMNS))})"
)


def _one_call(
    conn: sqlite3.Connection, where: str, params: tuple[object, ...]
) -> CallRecord | None:
    rows = _calls(conn, where, params)
    return rows[0] if rows else None


def _calls(conn: sqlite3.Connection, where: str, params: tuple[object, ...]) -> list[CallRecord]:
    sql = f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE {where} ORDER BY created_ms"  # noqa: S608
    return [CallRecord(*row) for row in conn.execute(sql, params)]


_SELECT_AUDIT = f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit "  # noqa: S608


@dataclass(frozen=True)
class _Pending:
    """A row to insert (``sql`` and ``values``) or a job (``work``), and who waits for it."""

    future: asyncio.Future[Any]
    sql: str = ""
    values: Sequence[Any] = ()
    work: Callable[[sqlite3.Connection], Any] | None = None
    committed_only: bool = False  # resolve once committed, before the fsync


class Store:
    """The broker's SQLite database: schema, group commit, and every query the broker makes."""

    def __init__(self, path: Path, *, durability: Durability = "fsync") -> None:
        self.path = path
        self._durability = durability
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[_Pending] = []
        self._flush: asyncio.Task[None] | None = None
        self._wal: WalSync | None = None
        self._checkpointer: _Checkpointer | None = None
        self._commits_since_wal_checkpoint = 0
        self._audit: AuditPipe | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, audit_key: Path | None = None, *, log_calls: bool = False) -> None:
        """Open (creating and migrating if needed) both databases and start the helper
        thread; the audit writer starts with the first record. ``audit_key``: the key file
        that signs the audit chain's checkpoints (none: no checkpoints); ``log_calls``: the
        writer logs each request's JSON line on stderr (the broker's, not a tool's)."""
        from broker.audit_pipe import AuditPipe  # it builds on this module

        try:
            self._conn = connect(self.path, busy_timeout=BUSY_TIMEOUT_S)
            migrate(self._conn)
            self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None
        audit = audit_database(self.path)
        try:
            prepare_audit_database(audit)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the audit database {audit}: {exc}") from None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="store-fsync")
        self._wal = WalSync(Path(f"{self.path}-wal"))
        self._checkpointer = _Checkpointer(self.path)
        self._audit = AuditPipe(audit, self._durability, audit_key, log_calls=log_calls)

    async def start_audit_writer(self) -> None:
        """Start the audit writer before the first record needs it (optional: the first record
        starts it otherwise)."""
        if self._audit is None:
            raise StoreError("the database is closed")
        await self._audit.start()

    async def close(self) -> None:
        """Let pending writes commit, then stop the audit writer, the helper thread and the
        connection."""
        if self._flush is not None:
            await asyncio.shield(self._flush)
        if self._audit is not None:
            await self._audit.close()
            self._audit = None
        if self._executor is not None:
            if self._checkpointer is not None:
                self._executor.submit(self._checkpointer.close).result()
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._wal is not None:
            self._wal.close()
            self._wal = None

    # -- writing -----------------------------------------------------------------------------

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in the next group commit; returns once it is committed (durable)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(future, work=work))
        return await future

    async def _insert(self, sql: str, values: Sequence[Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(future, sql=sql, values=values))
        await future

    def _enqueue(self, item: _Pending) -> None:
        if self._executor is None:
            raise StoreError("the database is closed")
        self._pending.append(item)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._flush_pending())

    async def _flush_pending(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                results = list(zip(batch, self._write(batch), strict=True))
                # failures, and writes that only need to be committed, are answered now
                _resolve([r for r in results if r[0].committed_only or not r[1][0]])
                later = [r for r in results if not r[0].committed_only and r[1][0]]
                if later and self._durability == "fsync":
                    try:
                        assert self._wal is not None
                        await loop.run_in_executor(self._executor, self._wal.sync)
                    except OSError as exc:
                        failed = (False, StoreError(f"fsync of the log failed: {exc}"))
                        later = [(item, failed) for item, _ in later]
                _resolve(later)
                self._commits_since_wal_checkpoint += 1
                if self._commits_since_wal_checkpoint >= WAL_CHECKPOINT_COMMITS:
                    assert self._checkpointer is not None
                    self._commits_since_wal_checkpoint = 0
                    await loop.run_in_executor(self._executor, self._checkpointer.run)
        finally:
            self._flush = None

    def _write(self, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
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
            _rollback(conn)
            return [(False, StoreError(f"database write failed: {exc}"))] * len(batch)
        return outcomes

    # -- audit -------------------------------------------------------------------------------

    async def append_audit(self, row: AuditRow, *, durable: bool = True) -> None:
        """Append one audit record to the chain (the audit writer gives it its place); returns
        when it is durable, or with ``durable=False`` once it is committed (what can fail, a
        full disk, a read-only or locked database, fails by then; the fsync follows with the
        next durable record). Writes to this database still pending (budget use, taint: nobody
        waits for them) are committed first, so they too are kept before the call goes on."""
        record = self.queue_audit(row, durable=durable)
        if self._pending or self._flush is not None:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._enqueue(_Pending(future, work=_nothing, committed_only=not durable))
            await future  # a failed batch fails the call; the record goes on alone
        await record

    def queue_audit(self, row: AuditRow, *, durable: bool = False) -> asyncio.Future[None]:
        """Send a record with the next batch without waiting: the future is done once it is
        committed (or, with ``durable``, on disk); await it before relying on it."""
        if self._audit is None:
            raise StoreError("the database is closed")
        return self._audit.append(row[:_CHAINED], durable=durable)

    async def checkpoint_if_due(self, interval_s: float) -> None:
        """A signed checkpoint when records came in since the last one and ``interval_s``
        passed (the audit writer knows both)."""
        if self._audit is None:
            raise StoreError("the database is closed")
        await self._audit.checkpoint_if_due(interval_s)

    # -- calls and freezes ------------------------------------------------------------------

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run a query now, on the loop's thread. Writes happen inline between awaits, so the
        connection is never inside a transaction here; a row read may be committed but not yet
        fsynced (never used to claim durability)."""
        assert self._conn is not None
        try:
            return work(self._conn)
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from None

    async def insert_call(self, record: CallRecord) -> bool:
        """Store a new call; False when (agent, idempotency_key) is already taken."""
        values = tuple(getattr(record, name) for name in _CALL_COLUMNS)

        def insert(conn: sqlite3.Connection) -> bool:
            try:
                conn.execute(_INSERT_CALL, values)
            except sqlite3.IntegrityError:
                return False
            return True

        return await self.run(insert)

    def get_call(self, call_id: str) -> CallRecord | None:
        """One call by id."""
        return self.read(lambda c: _one_call(c, "call_id = ?", (call_id,)))

    def find_call(self, agent: str, idempotency_key: str) -> CallRecord | None:
        """The call an agent made with this idempotency key."""
        return self.read(
            lambda c: _one_call(c, "agent = ? AND idempotency_key = ?", (agent, idempotency_key))
        )

    def calls_where(self, where: str, params: tuple[object, ...]) -> list[CallRecord]:
        """Calls matching a condition on the calls table's columns (constant SQL only)."""
        return self.read(lambda c: _calls(c, where, params))

    async def transition(
        self, call_id: str, from_states: tuple[str, ...], to_state: str, **fields: object
    ) -> bool:
        """Compare-and-set: move a call to ``to_state`` only if it is in one of
        ``from_states``; False when another decision came first."""
        for name in fields:
            if name not in _CALL_COLUMNS:
                raise ValueError(f"no column {name}")
        sets = ", ".join(["state = ?", *[f"{name} = ?" for name in fields]])
        marks = ", ".join("?" * len(from_states))
        sql = f"UPDATE calls SET {sets} WHERE call_id = ? AND state IN ({marks})"  # noqa: S608
        params = (to_state, *fields.values(), call_id, *from_states)
        return await self.run(lambda c: c.execute(sql, params).rowcount == 1)

    async def update_call(self, call_id: str, **fields: object) -> None:
        """Set columns of a call whatever its state (bookkeeping: Slack message, reminders)."""
        for name in fields:
            if name not in _CALL_COLUMNS:
                raise ValueError(f"no column {name}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        sql = f"UPDATE calls SET {sets} WHERE call_id = ?"  # noqa: S608
        await self.run(lambda c: c.execute(sql, (*fields.values(), call_id)))

    def calls_left_executing(self, now_ms: int) -> list[str]:
        """At start, before serving: writes that began and never recorded an outcome become
        outcome_unknown. They are never executed again; a human reconciles them."""
        assert self._conn is not None
        with self._conn:
            ids = [
                r[0]
                for r in self._conn.execute("SELECT call_id FROM calls WHERE state = 'executing'")
            ]
            self._conn.execute(
                "UPDATE calls SET state = 'outcome_unknown', updated_ms = ? "
                "WHERE state = 'executing'",
                (now_ms,),
            )
        return ids

    def freezes(self) -> dict[str, tuple[str, str, int]]:
        """agent (or ``*``) -> (reason, who, when) for every freeze in force."""
        return self.read(
            lambda c: {
                row[0]: (row[1], row[2], row[3])
                for row in c.execute("SELECT agent, reason, frozen_by, ts_ms FROM freezes")
            }
        )

    async def set_freeze(self, agent: str, reason: str, by: str, now_ms: int) -> None:
        """Freeze ``agent`` (``*`` for all); durable when this returns."""
        await self.run(
            lambda c: c.execute(
                "INSERT INTO freezes (agent, reason, frozen_by, ts_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (agent) DO UPDATE SET reason = excluded.reason, "
                "frozen_by = excluded.frozen_by, ts_ms = excluded.ts_ms",
                (agent, reason, by, now_ms),
            )
        )

    async def clear_freeze(self, agent: str) -> bool:
        """Lift a freeze; False when there was none."""
        return await self.run(
            lambda c: c.execute("DELETE FROM freezes WHERE agent = ?", (agent,)).rowcount > 0
        )

    # -- budgets -------------------------------------------------------------------------------

    def usage(self, scope: str, period: str) -> tuple[int, int, int]:
        """(calls, cost, alerted percent) used of a budget so far."""
        row = self.read(
            lambda c: c.execute(
                "SELECT calls, cost, alerted FROM budgets WHERE scope = ? AND period = ?",
                (scope, period),
            ).fetchone()
        )
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    def add_usage(self, scope: str, period: str, calls: int, cost: int, alerted: int) -> None:
        """Count use of a budget; committed with the next batch, before the call's own audit
        row (so before its answer leaves). Nobody waits for it."""
        self._fire_and_forget(_ADD_USAGE, (scope, period, calls, cost, alerted))

    def _fire_and_forget(self, sql: str, values: Sequence[Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # a failure shows in the audit row that follows in the same batch
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._enqueue(_Pending(future, sql=sql, values=values))

    def loop_history(self, since_ms: int) -> list[tuple[int, str, str, str, str, str]]:
        """(ts_ms, agent, tool, args_digest, decision, reason) of calls since ``since_ms``,
        from the audit table: the loop detector's memory after a restart."""
        with _reader(audit_database(self.path)) as conn:
            return conn.execute(
                "SELECT ts_ms, agent, tool, args_digest, decision, reason FROM audit "
                "WHERE ts_ms >= ? AND rpc = 'call' AND agent != '' "
                "AND event NOT IN (?, ?, 'replayed') ORDER BY seq",
                (since_ms, *STEP_EVENTS),
            ).fetchall()

    # -- taint ---------------------------------------------------------------------------------

    def taint(self, agent: str, task_id: str) -> list[tuple[str, str, str]]:
        """(kind, value, origin) of every outside value seen in this agent's task."""
        return self.read(
            lambda c: c.execute(
                "SELECT kind, value, origin FROM taint WHERE agent = ? AND task_id = ?",
                (agent, task_id),
            ).fetchall()
        )

    def add_taint(
        self, agent: str, task_id: str, kind: str, value: str, origin: str, now_ms: int
    ) -> None:
        """Remember an outside value for the task; committed with the call's audit row."""
        self._fire_and_forget(_ADD_TAINT, (agent, task_id, kind, value, origin, now_ms))

    # -- secrets -------------------------------------------------------------------------------

    def changed_elsewhere(self) -> int:
        """SQLite's data_version: it changes when another connection (the ``broker secrets``
        command) commits, so cached secrets know to reload."""
        assert self._conn is not None
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        return int(version)

    def secret_rows(self) -> list[SecretRow]:
        """Every stored secret, encrypted."""
        assert self._conn is not None
        return SecretTable(self._conn).rows()

    def secret_used(self, name: str, now_ms: int) -> None:
        """Note when a secret was last used; written with the next commit, nobody waits."""
        self._fire_and_forget(_TOUCH_SECRET, (now_ms, name))

    def recent_nonces(self, since_ms: int) -> dict[str, int]:
        """Accepted nonces recorded at or after ``since_ms``, with when they were recorded."""
        with _reader(audit_database(self.path)) as conn:
            rows = conn.execute(
                "SELECT nonce, ts_ms FROM audit WHERE ts_ms >= ? AND nonce != ''", (since_ms,)
            )
            return dict(rows.fetchall())


_ADD_USAGE = (
    "INSERT INTO budgets (scope, period, calls, cost, alerted) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (scope, period) DO UPDATE SET calls = calls + excluded.calls, "
    "cost = cost + excluded.cost, alerted = max(alerted, excluded.alerted)"
)
_ADD_TAINT = (
    "INSERT OR IGNORE INTO taint (agent, task_id, kind, value, origin, ts_ms) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_TOUCH_SECRET = "UPDATE secrets SET last_used_ms = ? WHERE name = ?"  # noqa: S105 (SQL)


@dataclass(frozen=True)
class SecretRow:
    """One stored secret: its name, the encrypted value and when it was made, changed, used."""

    name: str
    nonce: bytes
    ciphertext: bytes
    created_ms: int
    updated_ms: int
    last_used_ms: int | None


class SecretTable:
    """The SQL of the secrets table, on a connection the caller owns (the broker's, or the
    ``broker secrets`` command's own)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> SecretTable:
        """For the command line: connect (creating the database if need be) and migrate."""
        try:
            conn = connect(path)
            migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from None
        return cls(conn)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def rows(self) -> list[SecretRow]:
        """Every secret, by name."""
        query = "SELECT name, nonce, ciphertext, created_ms, updated_ms, last_used_ms FROM secrets"
        try:
            return [SecretRow(*row) for row in self._conn.execute(query + " ORDER BY name")]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read secrets: {exc}") from None

    def put(
        self, name: str, nonce: bytes, ciphertext: bytes, now_ms: int, *, replace: bool
    ) -> bool:
        """Store a new secret (``replace`` False) or a new value for an existing one (True);
        False when the name was not in the state that asks for."""
        try:
            with self._transaction():
                exists = self._conn.execute(
                    "SELECT 1 FROM secrets WHERE name = ?", (name,)
                ).fetchone()
                if bool(exists) != replace:
                    return False
                self._conn.execute(
                    "INSERT INTO secrets (name, nonce, ciphertext, created_ms, updated_ms) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET nonce = "
                    "excluded.nonce, ciphertext = excluded.ciphertext, updated_ms = "
                    "excluded.updated_ms",
                    (name, nonce, ciphertext, now_ms, now_ms),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write secret {name}: {exc}") from None
        return True

    def delete(self, name: str) -> bool:
        """Remove a secret; False when there was none."""
        try:
            with self._transaction():
                cursor = self._conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete secret {name}: {exc}") from None
        return cursor.rowcount > 0

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            _rollback(self._conn)
            raise
        self._conn.execute("COMMIT")


def read_audit(
    path: Path, call_id: str | None = None, *, since_ms: int | None = None
) -> list[AuditRow]:
    """Audit rows in order: all, one call's, or those at or after ``since_ms`` (for tools and
    tests, on their own read-only connection)."""
    where: str = ""
    params: tuple[object, ...] = ()
    if call_id is not None:
        where, params = "WHERE call_id = ?", (call_id,)
    elif since_ms is not None:
        where, params = "WHERE ts_ms >= ?", (since_ms,)
    with _reader(audit_database(path)) as conn:
        rows = conn.execute(_SELECT_AUDIT + where + " ORDER BY seq", params)
        return [AuditRow(*row) for row in rows.fetchall()]


def read_call(path: Path, call_id: str) -> CallRecord | None:
    """One stored call, on a read-only connection (for the command line)."""
    with _reader(path) as conn:
        return _one_call(conn, "call_id = ?", (call_id,))


AUDIT_FILTERS = ("agent", "tool", "task_id", "decision", "reason", "event", "call_id", "rpc")


def query_audit(
    path: Path,
    equals: dict[str, str] | None = None,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    after_seq: int = 0,
    limit: int | None = None,
    newest: bool = False,
) -> list[AuditRow]:
    """Audit rows matching exact column values (AUDIT_FILTERS) and a time range, in chain
    order (or the newest ``limit`` of them, still in chain order)."""
    clauses, params = ["seq > ?"], [after_seq]  # type: tuple[list[str], list[object]]
    for column, value in (equals or {}).items():
        if column not in AUDIT_FILTERS:
            raise ValueError(f"cannot filter on {column}")
        clauses.append(f"{column} = ?")
        params.append(value)
    if since_ms is not None:
        clauses.append("ts_ms >= ?")
        params.append(since_ms)
    if until_ms is not None:
        clauses.append("ts_ms < ?")
        params.append(until_ms)
    order = " ORDER BY seq DESC" if newest else " ORDER BY seq"
    sql = _SELECT_AUDIT + "WHERE " + " AND ".join(clauses) + order
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with _reader(audit_database(path)) as conn:
        rows = [AuditRow(*row) for row in conn.execute(sql, params).fetchall()]
    return rows[::-1] if newest else rows


def connect(path: Path, *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """A connection in WAL mode (synchronous=NORMAL) with explicit transactions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(
    conn: sqlite3.Connection,
    steps: list[str | Callable[[sqlite3.Connection], None]] | None = None,
) -> None:
    """Bring the schema up to date, one numbered step at a time (``steps``: MIGRATIONS, the
    broker database's, unless told otherwise)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate((steps or MIGRATIONS)[version:], start=version + 1):
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
            _rollback(conn)
            raise


class _reader:
    """A short-lived read-only connection (``with _reader(path) as conn``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise _no_database(self.path)
        try:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the database {self.path}: {exc}") from None
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


class WalSync:
    """fsyncs the write-ahead log file (and, when it is new, its folder) from a helper thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def sync(self) -> None:
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Checkpointer:
    """Copies the write-ahead log into the database on the store's helper thread, with a
    connection of its own, while the flush waits: writes queue up meanwhile (the loop runs on),
    and with no writer in between the whole log is copied, so the next write starts it again
    from the top. A failed checkpoint is logged and tried again later: the log only grows
    meanwhile, nothing is lost."""

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


def _no_database(path: Path) -> StoreError:
    return StoreError(f"there is no database at {path} (has the broker run here?)")


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # no transaction was open: nothing to undo
        conn.execute("ROLLBACK")


def _nothing(conn: sqlite3.Connection) -> None:
    """A job that writes nothing: awaiting it awaits the commit of what was queued before."""
