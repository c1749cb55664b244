"""SQL on a test broker's state database, whichever backend holds it: tests that set up what
a crash leaves behind, or look at what a sweep dropped, do it the same way on both."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import psycopg

from broker.testing import Workspace


def stored_bytes(ws: Workspace) -> bytes:
    """Everything the broker stored, as bytes to search: the SQLite files (audit.db too), or
    every row of every table in PostgreSQL, as text."""
    if not ws.database_url:
        return b"".join(p.read_bytes() for p in ws.database.parent.glob("*.db*"))
    tables = state_sql(ws, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    rows = [state_sql(ws, f"SELECT t::text FROM {name} AS t") for (name,) in tables]
    return "\n".join(str(row[0]) for table in rows for row in table).encode()


def state_sql(ws: Workspace, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Run one statement (``?`` placeholders) on the workspace's state database, committed;
    the rows it returns."""
    if ws.database_url:
        with psycopg.connect(ws.database_url, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []
    conn = sqlite3.connect(ws.database, isolation_level=None)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()
