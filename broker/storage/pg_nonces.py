"""Nonces claimed in PostgreSQL, so that a request replayed to another replica is refused
there too: the first ``INSERT ... ON CONFLICT DO NOTHING`` of a nonce wins, whichever process
makes it. Rows go once stale (past twice the request window), in batches."""

from __future__ import annotations

from broker.storage.pg_connection import ASYNC_COMMIT, Connection, PgDatabase, delete_in_batches

_CLAIM = "INSERT INTO nonces (nonce, expires_ms) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_PRUNE = (
    "DELETE FROM nonces WHERE nonce IN (SELECT nonce FROM nonces WHERE expires_ms < %s LIMIT %s)"
)


class PgNonces:
    """The NonceStore of the PostgreSQL backend."""

    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    async def claim(self, nonce: str, expires_ms: int) -> bool:
        """True when no process had claimed ``nonce``; committed before it returns."""

        async def claim(conn: Connection) -> bool:
            await conn.execute(ASYNC_COMMIT)
            cursor = await conn.execute(_CLAIM, (nonce, expires_ms))
            return cursor.rowcount == 1

        return await self._db.run(claim)

    async def prune(self, now_ms: int) -> int:
        """Drop the nonces stale at ``now_ms``; how many."""
        return await delete_in_batches(self._db, _PRUNE, (now_ms,))
