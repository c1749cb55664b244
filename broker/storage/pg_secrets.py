"""Encrypted secrets in PostgreSQL (ciphertext only), with a version counter moved in the same
transaction as every change of a name or a value: every replica polls it and reloads its
cached values when it moves."""

from __future__ import annotations

from broker.storage.pg_connection import Connection, PgDatabase
from broker.storage.pg_queue import QueuedWrites
from broker.storage.records import SecretRow

_COLUMNS = "name, nonce, ciphertext, created_ms, updated_ms, last_used_ms"
_TOUCH = "UPDATE secrets SET last_used_ms = %s WHERE name = %s"
_MOVE = "UPDATE secrets_version SET version = version + 1"
_ADD = (
    "INSERT INTO secrets (name, nonce, ciphertext, created_ms, updated_ms) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING"
)
_REPLACE = "UPDATE secrets SET nonce = %s, ciphertext = %s, updated_ms = %s WHERE name = %s"


class PgSecrets:
    """The SecretStore of the PostgreSQL backend."""

    def __init__(self, database: PgDatabase, writes: QueuedWrites) -> None:
        self._db = database
        self._writes = writes

    async def version(self) -> int:
        """Moves with every change of a name or a value."""

        async def read(conn: Connection) -> int:
            cursor = await conn.execute("SELECT version FROM secrets_version")
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._db.read(read)

    async def rows(self) -> list[SecretRow]:
        """Every secret, by name."""

        async def read(conn: Connection) -> list[SecretRow]:
            cursor = await conn.execute(f"SELECT {_COLUMNS} FROM secrets ORDER BY name")  # noqa: S608
            return [SecretRow(*row) for row in await cursor.fetchall()]

        return await self._db.read(read)

    async def put(
        self, name: str, nonce: bytes, ciphertext: bytes, now_ms: int, *, replace: bool
    ) -> bool:
        """A new secret (``replace`` False) or a new value for an existing one (True); False
        when the name was not in the state that asks for."""

        async def put(conn: Connection) -> bool:
            # each one statement: of two racing adds, one finds the name taken
            if replace:
                cursor = await conn.execute(_REPLACE, (nonce, ciphertext, now_ms, name))
            else:
                cursor = await conn.execute(_ADD, (name, nonce, ciphertext, now_ms, now_ms))
            if cursor.rowcount != 1:
                return False
            await conn.execute(_MOVE)
            return True

        return await self._db.run(put)

    async def delete(self, name: str) -> bool:
        """Remove a secret; False when there was none."""

        async def delete(conn: Connection) -> bool:
            cursor = await conn.execute("DELETE FROM secrets WHERE name = %s", (name,))
            if cursor.rowcount == 0:
                return False
            await conn.execute(_MOVE)
            return True

        return await self._db.run(delete)

    def used(self, name: str, now_ms: int) -> None:
        """Queued: note when a secret was last used."""
        self._writes.queue(_TOUCH, (now_ms, name))
