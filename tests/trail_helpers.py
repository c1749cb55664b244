"""Writing and checking an audit trail outside a running broker, with the broker's own parts:
the state database, the audit writer process behind its pipe, and the SQLite audit reader."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

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
    """Run SQL on a workspace's audit.db, as someone with write access to the data dir would."""
    _run_sql(audit_database(ws.database), statements)


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
