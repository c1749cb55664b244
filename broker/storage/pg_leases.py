"""Leases: each broker process on a shared PostgreSQL state holds a row of ``replicas`` and
keeps its heartbeat fresh. A write that starts executing is stamped with its process
(``pg_schema`` 3); recovery marks ``outcome_unknown`` only the writes of processes whose
lease ran out, so a replica starting, or looking again later, never touches a live replica's
running write. Times are the database's clock: replicas on machines whose clocks disagree
still agree on who is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

from broker.storage.pg_connection import Connection, PgDatabase
from broker.storage.records import StoreError

log = logging.getLogger(__name__)

DB_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT"
HEARTBEAT_S = 2.0  # how often a process renews its lease
# A lease runs out this long after its last heartbeat: several missed beats (a busy machine,
# a database restart), never one slow beat, lets another replica take its writes for lost.
LEASE_MS = 15_000
FORGET_MS = 86_400_000  # rows of processes gone this long are dropped
# DB_NOW_MS is a constant expression and every value is bound: no injection path.
_BEAT = (
    "INSERT INTO replicas (id, host, place, started_ms, heartbeat_ms) "  # noqa: S608
    f"VALUES (%s, %s, %s, {DB_NOW_MS}, {DB_NOW_MS}) "
    f"ON CONFLICT (id) DO UPDATE SET heartbeat_ms = {DB_NOW_MS}"
)
# the processes that held this place before: gone, since this one holds its lock now
_PREDECESSORS = "DELETE FROM replicas WHERE place = %s AND place != '' AND id != %s"
_FORGET = f"DELETE FROM replicas WHERE heartbeat_ms < {DB_NOW_MS} - %s"  # noqa: S608


def replica_id() -> str:
    """A name for this process, new at every start (a restarted process has a new lease)."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


class Lease:
    """This process's row in ``replicas``, renewed every HEARTBEAT_S while open."""

    def __init__(self, database: PgDatabase, replica: str, place: str = "") -> None:
        """``place``: the host and data directory lock this process holds ("" for a command
        line tool, which holds none)."""
        self._db = database
        self.replica = replica
        self._place = place
        self._host = socket.gethostname()
        self._task: asyncio.Task[None] | None = None

    async def take(self) -> None:
        """Take the lease (before recovery looks at anyone's) and keep it renewed; let go of
        the leases of the processes that held this place before (a restart after a crash:
        their running writes are lost at once, not a lease later)."""

        async def succeed(conn: Connection) -> None:
            await conn.execute(_PREDECESSORS, (self._place, self.replica))

        await self._db.run(succeed)
        await self._beat()
        self._task = asyncio.get_running_loop().create_task(self._renew(), name="pg-lease")

    async def release(self) -> None:
        """Stop renewing and let go: a clean stop leaves no running write of its own."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

        async def drop(conn: Connection) -> None:
            await conn.execute("DELETE FROM replicas WHERE id = %s", (self.replica,))

        with contextlib.suppress(StoreError):  # unrenewed, it runs out all the same
            await self._db.run(drop)

    async def _beat(self) -> None:
        async def beat(conn: Connection) -> None:
            await conn.execute(_BEAT, (self.replica, self._host, self._place))
            await conn.execute(_FORGET, (FORGET_MS,))

        await self._db.run(beat)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)  # the beat's period: several fit in one lease
            try:
                await self._beat()
            except StoreError as exc:
                log.warning("could not renew this broker's lease: %s", exc)
