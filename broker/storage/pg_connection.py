"""PostgreSQL connections: a pool (psycopg 3, async), transactions, migrations, and errors
turned into ``StoreError``.

Why a pool and not one connection: several replicas and many concurrent calls each want a
short transaction; a pool lets reads run beside the queued writes' flush. Connections broken
by a server restart are dropped by the pool when they come back to it; a read that meets one
is tried once more on a fresh connection, so the broker recovers by itself when the server
returns. Nothing above the storage package sees psycopg.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from broker.storage.records import StoreError
from broker.storage.urls import redacted

T = TypeVar("T")
Connection = psycopg.AsyncConnection[tuple[Any, ...]]
Work = Callable[[Connection], Awaitable[T]]

log = logging.getLogger(__name__)

POOL_SIZE = 10  # connections per broker process: calls hold one for a statement or two
# how long a call waits for a connection (or to make one) before it fails closed: a database
# that is down must refuse calls in seconds, not hold every agent up
CONNECT_TIMEOUT_S = 3.0
# migrations of concurrent starters run one at a time (a session lock: any number)
MIGRATION_LOCK = 0x70B0_0001
PRUNE_BATCH = 1000  # rows one retention statement deletes: a short transaction each
# For a write on every call's path (a nonce claim, a budget charge): committed without waiting
# for the disk. It is on disk all the same before the call's answer leaves: the call's audit
# record is committed after it, waiting for the disk (durability fsync), and PostgreSQL's log
# is written in order, so that flush takes this commit with it. An fsync of its own would be
# one more disk wait per call.
ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"


class PgDatabase:
    """One PostgreSQL database, through a pool: ``run`` a transaction, ``read`` (tried again
    once on a connection a restart broke)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = POOL_SIZE,
        name: str = "toolbroker",
        replica: str = "",
    ) -> None:
        self.url = url
        self.where = redacted(url)
        kwargs: dict[str, Any] = {
            "connect_timeout": max(1, int(CONNECT_TIMEOUT_S)),
            "autocommit": True,
        }
        if replica:  # every session says which broker process it is (leases: pg_schema 3)
            kwargs["options"] = f"-c toolbroker.replica={replica}"
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            name=name,
            kwargs=kwargs,
            reconnect_timeout=0,  # never give up: the server coming back is the normal case
        )

    async def open(self, migrations: Sequence[str] | None) -> None:
        """Connect and bring the schema up to date (None: leave it as it is, for readers);
        StoreError naming the server if it cannot."""
        try:
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
        except (PoolTimeout, psycopg.Error) as exc:
            await self._pool.close()
            raise StoreError(f"cannot reach the database {self.where}: {error_text(exc)}") from None
        if migrations is None:
            return
        try:
            await self.run(lambda conn: migrate(conn, migrations))
        except StoreError:
            await self._pool.close()
            raise

    async def run(self, work: Work[T]) -> T:
        """``work`` in one transaction; StoreError if the database cannot do it."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                return await work(conn)
        except PoolTimeout:
            raise StoreError(f"the database {self.where} is unavailable") from None
        except psycopg.Error as exc:
            raise StoreError(f"database error: {error_text(exc)}") from None

    async def read(self, work: Work[T]) -> T:
        """``work`` (reads only) in one transaction, tried once more if the first connection
        was broken (the server restarted since it was made)."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                return await work(conn)
        except psycopg.OperationalError:
            pass  # a connection from before a restart; the pool drops it
        except PoolTimeout:
            raise StoreError(f"the database {self.where} is unavailable") from None
        except psycopg.Error as exc:
            raise StoreError(f"database error: {error_text(exc)}") from None
        return await self.run(work)

    async def close(self) -> None:
        """Close every connection."""
        await self._pool.close()


async def migrate(conn: Connection, steps: Sequence[str]) -> None:
    """Bring the schema up to date, one numbered step at a time, under a lock that makes
    replicas starting together take turns (the caller's transaction holds it)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS toolbroker_schema (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "version INTEGER NOT NULL)"
    )
    await conn.execute(
        "INSERT INTO toolbroker_schema (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING"
    )
    cursor = await conn.execute("SELECT version FROM toolbroker_schema")
    row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(steps):
        raise StoreError(
            f"the database schema is version {version}, newer than this broker knows "
            f"({len(steps)}): upgrade the broker"
        )
    for number, script in enumerate(steps[version:], start=version + 1):
        await conn.execute(script.encode())  # several statements: sent as one simple query
        await conn.execute("UPDATE toolbroker_schema SET version = %s", (number,))


async def delete_in_batches(database: PgDatabase, sql: str, params: tuple[object, ...]) -> int:
    """Run ``sql`` (a DELETE of at most ``%s`` rows, the last parameter) until it deletes
    fewer than a batch; how many rows in all. Each batch is a short transaction of its own."""
    values = (*params, PRUNE_BATCH)

    async def delete(conn: Connection) -> int:
        cursor = await conn.execute(sql, values)
        return cursor.rowcount

    total = 0
    while True:
        deleted = await database.run(delete)
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


def no_nul(value: str) -> str:
    """Text as PostgreSQL can hold it (a TEXT column refuses U+0000): free text an agent or
    an operator wrote (an intent, a reason) keeps its NULs as U+FFFD. Values compared
    exactly (outside values and text) are stored as bytes instead."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def error_text(exc: BaseException) -> str:
    """The first line of a database error: what went wrong, without the SQL or a URL."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
