"""The schemas of the broker's two SQLite files, as numbered migration steps.

``broker.db`` holds the broker's state (calls, freezes, budgets, taint, secrets); ``audit.db``
beside it holds the audit trail, written by the audit writer process. A database remembers the
last step it ran (``PRAGMA user_version``); opening it runs the steps after that, each in its
own transaction. Steps are only ever added, never changed: a database made by any earlier
version comes up to date.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from broker.storage.records import AUDIT_COLUMNS, record_hash
from broker.storage.sqlite_connection import Migration, connect, migrate, rollback

MIGRATIONS: list[Migration] = [
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
    # 10: a version counter for the secrets, moved by every change of a name or a value (not
    # by a secret's use): a running broker reloads its cached values when it moves
    lambda conn: _secrets_version(conn),
    # 11: outside text itself, compacted (the taint check compares writes with all of it, not
    # only with the values of shapes it recognises), and the agent's own words and trusted
    # answers that vouch for a value; per agent, the oldest dropped beyond a bound
    lambda conn: _outside_text(conn),
    # 12: the audit chain's signed heads, kept here too: deleting or replacing audit.db does
    # not delete them (``broker audit verify`` compares the chain with them)
    """
    CREATE TABLE audit_heads (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL,
        head_hash TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        broker_id TEXT NOT NULL
    );
    """,
    # 13: retention: budgets note when they were last spent from (a task's budget idle past
    # the retention is dropped; rows of older versions count as spent now), and the final
    # calls and outside values are found by time
    lambda conn: _retention(conn),
]

# audit.db: the audit trail (its own file, so its writer never waits for the broker's lock),
# built by the same steps that once built it in broker.db: the same columns in the same order
AUDIT_MIGRATIONS: list[Migration] = [
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
    # A checkpoint names its broker (signed with it): one broker's cannot pass for another's.
    "ALTER TABLE audit_checkpoints ADD COLUMN broker_id TEXT NOT NULL DEFAULT '';",
]


def audit_database(database: Path) -> Path:
    """Where the audit trail of the broker database ``database`` lives (``audit.db`` beside
    it); given the audit database itself, the same path."""
    return database.with_name("audit.db")


def prepare_audit_database(database: Path) -> None:
    """Create or migrate the audit database beside ``database``."""
    conn = connect(audit_database(database))
    try:
        migrate(conn, AUDIT_MIGRATIONS)
    finally:
        conn.close()


def _chain_existing(conn: sqlite3.Connection) -> None:
    """Migration 7: give the records written before the chain existed their hashes."""
    previous = ""
    rows = conn.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit ORDER BY seq").fetchall()  # noqa: S608
    for row in rows:
        values = [*row[:-2], previous]
        digest = record_hash(values)
        conn.execute(
            "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?",
            (previous, digest, row[AUDIT_COLUMNS.index("seq")]),
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
                ("audit", AUDIT_COLUMNS),
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
            rollback(destination)
            raise
        finally:
            destination.close()
    conn.execute("DROP TABLE audit")
    conn.execute("DROP TABLE audit_checkpoints")


def _secrets_version(conn: sqlite3.Connection) -> None:
    """Migration 10 (its triggers hold semicolons, so it is not split like the others)."""
    conn.execute(
        "CREATE TABLE secrets_version (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "version INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO secrets_version (id, version) VALUES (1, 0)")
    moved = "BEGIN UPDATE secrets_version SET version = version + 1; END"
    conn.execute(f"CREATE TRIGGER secrets_added AFTER INSERT ON secrets {moved}")
    conn.execute(
        f"CREATE TRIGGER secrets_changed AFTER UPDATE OF name, nonce, ciphertext ON secrets {moved}"
    )
    conn.execute(f"CREATE TRIGGER secrets_removed AFTER DELETE ON secrets {moved}")


def _outside_text(conn: sqlite3.Connection) -> None:
    """Migration 11: the ``outside_text`` table, indexed for a task's rows and an agent's
    recent untrusted ones; an index on the taint values' time, for the agent's other tasks
    within its window."""
    conn.execute(
        "CREATE TABLE outside_text (id INTEGER PRIMARY KEY AUTOINCREMENT, agent TEXT NOT NULL, "
        "task_id TEXT NOT NULL, source TEXT NOT NULL "
        "CHECK (source IN ('untrusted', 'trusted', 'own')), origin TEXT NOT NULL, "
        "marks TEXT NOT NULL, text TEXT NOT NULL, chars INTEGER NOT NULL, "
        "at_ms INTEGER NOT NULL)"
    )
    conn.execute("CREATE INDEX outside_text_task ON outside_text (agent, task_id)")
    conn.execute("CREATE INDEX outside_text_time ON outside_text (agent, source, at_ms)")
    conn.execute("CREATE INDEX taint_time ON taint (agent, ts_ms)")


def _retention(conn: sqlite3.Connection) -> None:
    """Migration 13: ``budgets.updated_ms``, and the indexes the retention sweep reads."""
    conn.execute("ALTER TABLE budgets ADD COLUMN updated_ms INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE budgets SET updated_ms = ?", (time.time_ns() // 1_000_000,))
    conn.execute("CREATE INDEX calls_updated ON calls (updated_ms)")
    conn.execute("CREATE INDEX outside_text_at ON outside_text (at_ms)")
