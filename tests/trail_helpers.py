"""Writing and checking an audit trail outside a running broker, with the broker's own parts:
the state database, the audit writer process behind its pipe, and the SQLite audit reader."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.checkpoints import Signer
from broker.audit.pipe import AuditPipe, WriterOptions
from broker.audit.trail import AuditTrail
from broker.audit.verification import Checkpoint, Held, Verdict, prune, verify
from broker.cli import main
from broker.storage.records import AuditQuery, AuditRow
from broker.storage.sqlite_audit import SqliteAuditReader
from broker.storage.sqlite_schema import audit_database
from broker.storage.sqlite_state import SqliteState
from broker.testing import Workspace
from tests.state_sql import state_sql


@contextlib.asynccontextmanager
async def opened_trail(
    path: Path, key: Path | None = None, durability: str = "process"
) -> AsyncIterator[AuditTrail]:
    """The trail beside broker database ``path`` as the broker opens it; stopped (the writer
    signs its head when it has a key) on the way out."""
    state = SqliteState(path, durability="fsync" if durability == "fsync" else "process")
    await state.open()
    options = WriterOptions(key_file=key, broker_id="broker.test", heads=path)
    trail = AuditTrail(AuditPipe(audit_database(path), durability, options), state.settle)
    await trail.start()
    try:
        yield trail
    finally:
        await state.close()
        await trail.close()


def append(path: Path, rows: list[AuditRow], key: Path | None = None) -> None:
    """Append ``rows`` one at a time, then stop the writer."""

    async def write() -> None:
        async with opened_trail(path, key) as trail:
            for row in rows:
                await trail.append(row)

    asyncio.run(write())


def verify_at(
    path: Path, public_key: Ed25519PublicKey, external: Checkpoint | None = None
) -> Verdict:
    """``broker audit verify`` of the trail beside ``path`` (and a checkpoint kept elsewhere)."""
    held = [Held(external, "kept.json")] if external is not None else []

    async def check() -> Verdict:
        reader = SqliteAuditReader(path)
        try:
            return await verify(reader, public_key, held)
        finally:
            await reader.close()

    return asyncio.run(check())


def query_at(path: Path, query: AuditQuery) -> list[AuditRow]:
    """``broker audit query`` of the trail beside ``path``."""

    async def read() -> list[AuditRow]:
        reader = SqliteAuditReader(path)
        try:
            return await reader.query(query)
        finally:
            await reader.close()

    return asyncio.run(read())


def prune_at(path: Path, before_ms: int, signer: Signer) -> tuple[int, Checkpoint | None]:
    """``broker audit prune`` of the trail beside ``path``."""

    async def cut() -> tuple[int, Checkpoint | None]:
        reader = SqliteAuditReader(path)
        try:
            return await prune(reader, before_ms, signer)
        finally:
            await reader.close()

    return asyncio.run(cut())


def cli_verify(ws: Workspace, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    """``broker audit verify --config`` of a workspace's broker: (exit status, what it printed)."""
    code = main(["audit", "verify", "--config", str(ws.root / "broker.yaml"), *extra])
    return code, capsys.readouterr().out


def on_trail(ws: Workspace, *statements: str) -> None:
    """Run SQL on a workspace's trail (audit.db, or the tables in PostgreSQL), as someone with
    write access to the data dir or the database would."""
    for statement in statements:
        trail_sql(ws, statement)


def trail_sql(ws: Workspace, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """One statement (``?`` placeholders) on the workspace's trail, committed; its rows."""
    if ws.database_url:
        return state_sql(ws, sql, params)
    conn = sqlite3.connect(audit_database(ws.database), isolation_level=None)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


@contextlib.contextmanager
def trail_locked(ws: Workspace) -> Iterator[None]:
    """Another process holding the trail's write lock meanwhile (a backup tool, a careless
    `sqlite3 audit.db`, or a session that locked the chain's head row in PostgreSQL)."""
    if ws.database_url:
        with psycopg.connect(ws.database_url) as conn, conn.transaction():
            conn.execute("SELECT seq FROM audit_chain WHERE id = 1 FOR UPDATE")
            yield
        return
    blocker = sqlite3.connect(audit_database(ws.database), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


class Places(NamedTuple):
    """What ``broker audit verify`` calls each place, on the workspace's backend."""

    marks: str  # the trail's own checkpoints
    heads: str  # the heads kept with the state
    trail: str  # the records


def places(ws: Workspace) -> Places:
    """The names verify gives the places of ``ws``'s backend."""
    if ws.database_url:
        return Places("audit_checkpoints", "audit_heads", "the audit table")
    return Places("audit.db", "broker.db", "audit.db")


def on_state(ws: Workspace, *statements: str) -> None:
    """Run SQL on a workspace's state database (broker.db, or PostgreSQL), likewise."""
    for statement in statements:
        state_sql(ws, statement)


def _run_sql(path: Path, statements: tuple[str, ...]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()
