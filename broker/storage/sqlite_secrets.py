"""Encrypted secrets in SQLite: the ``secrets`` table of broker.db (ciphertext only).

``version`` is a counter that triggers move with every change of a name or a value, whoever
made it (the ``broker secrets`` command, another process): a running broker reloads its cached
values within a moment of a change, and not when a secret is only used.
"""

from __future__ import annotations

import sqlite3

from broker.storage.group_commit import GroupCommit
from broker.storage.records import SecretRow
from broker.storage.sqlite_connection import Reads

_COLUMNS = "name, nonce, ciphertext, created_ms, updated_ms, last_used_ms"
_TOUCH = "UPDATE secrets SET last_used_ms = ? WHERE name = ?"


class SqliteSecrets:
    """The SecretStore of the SQLite backend."""

    def __init__(self, writes: GroupCommit, reads: Reads) -> None:
        self._writes = writes
        self._reads = reads

    async def version(self) -> int:
        """Moves with every change of a name or a value."""
        query = "SELECT version FROM secrets_version"
        return int(await self._reads.run(lambda c: c.execute(query).fetchone()[0]))

    async def rows(self) -> list[SecretRow]:
        """Every secret, by name."""
        query = f"SELECT {_COLUMNS} FROM secrets ORDER BY name"  # noqa: S608
        return await self._reads.run(lambda c: [SecretRow(*row) for row in c.execute(query)])

    async def put(
        self, name: str, nonce: bytes, ciphertext: bytes, now_ms: int, *, replace: bool
    ) -> bool:
        """A new secret (``replace`` False) or a new value for an existing one (True); False
        when the name was not in the state that asks for."""

        def put(conn: sqlite3.Connection) -> bool:
            exists = conn.execute("SELECT 1 FROM secrets WHERE name = ?", (name,)).fetchone()
            if bool(exists) != replace:
                return False
            conn.execute(
                "INSERT INTO secrets (name, nonce, ciphertext, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET nonce = "
                "excluded.nonce, ciphertext = excluded.ciphertext, updated_ms = "
                "excluded.updated_ms",
                (name, nonce, ciphertext, now_ms, now_ms),
            )
            return True

        return await self._writes.run(put)

    async def delete(self, name: str) -> bool:
        """Remove a secret; False when there was none."""
        return await self._writes.run(
            lambda c: c.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount > 0
        )

    def used(self, name: str, now_ms: int) -> None:
        """Queued: note when a secret was last used."""
        self._writes.queue(_TOUCH, (now_ms, name))
