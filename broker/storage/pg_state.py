"""The PostgreSQL backend of the broker's state (``database_url``): calls, freezes, budgets,
taint, secrets and the audit chain's signed heads in one database that every broker process
and replica shares."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from broker.storage.pg_budgets import PgBudgets
from broker.storage.pg_calls import PgCalls
from broker.storage.pg_changes import ChangeListener, announce
from broker.storage.pg_connection import PgDatabase
from broker.storage.pg_freezes import PgFreezes
from broker.storage.pg_heads import PgAuditHeads
from broker.storage.pg_leases import Lease, replica_id
from broker.storage.pg_nonces import PgNonces
from broker.storage.pg_queue import QueuedWrites
from broker.storage.pg_schema import MIGRATIONS
from broker.storage.pg_secrets import PgSecrets
from broker.storage.pg_taint import PgTaint
from broker.storage.records import StoreError

log = logging.getLogger(__name__)


class PgState:
    """The StateStore on PostgreSQL. A commit there is durable (``synchronous_commit`` is the
    server's to set), so ``settle`` waits for the commit whatever ``durable`` says."""

    calls: PgCalls
    freezes: PgFreezes
    budgets: PgBudgets
    taint: PgTaint
    secrets: PgSecrets
    heads: PgAuditHeads
    nonces: PgNonces

    def __init__(self, url: str, place: str = "") -> None:
        """``place``: the host and data directory lock the broker holds (pg_leases)."""
        self._replica = replica_id()
        self._database = PgDatabase(url, replica=self._replica)
        self._lease = Lease(self._database, self._replica, place)
        self._writes: QueuedWrites | None = None
        self._listener: ChangeListener | None = None
        self._telling: set[asyncio.Task[None]] = set()

    @property
    def where(self) -> str:
        """The database, without its password."""
        return self._database.where

    async def open(self) -> None:
        """Connect and migrate; StoreError naming the server (never its password)."""
        await self._database.open(MIGRATIONS)
        await self._lease.take()
        self._writes = QueuedWrites(self._database)
        self.calls = PgCalls(self._database)
        self.freezes = PgFreezes(self._database)
        self.budgets = PgBudgets(self._database, self._writes)
        self.taint = PgTaint(self._database, self._writes)
        self.secrets = PgSecrets(self._database, self._writes)
        self.heads = PgAuditHeads(self._database)
        self.nonces = PgNonces(self._database)

    @property
    def shared_budgets(self) -> PgBudgets:
        """The budgets, charged atomically across replicas."""
        return self.budgets

    @property
    def shared(self) -> bool:
        """Several processes share this state: recovery looks again while running."""
        return True

    def watch(self, handler: Callable[[str, str], None]) -> None:
        """Listen for the other processes' changes (LISTEN, reconnecting while open)."""
        if self._listener is None:
            self._listener = ChangeListener(self._database.url, handler)
            self._listener.start()

    def announce(self, topic: str, key: str = "") -> None:
        """NOTIFY the other processes, from a task of its own."""
        if self._writes is None:
            return
        task = asyncio.get_running_loop().create_task(self._tell(topic, key))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _tell(self, topic: str, key: str) -> None:
        try:
            await self._database.run(lambda conn: announce(conn, topic, key))
        except StoreError as exc:
            log.warning("could not tell the other replicas %s:%s: %s", topic, key, exc)

    def settle(self, *, durable: bool, lazy: bool = False) -> asyncio.Future[None] | None:
        """None when no queued write is outstanding (lazy ones count only with ``lazy``);
        else done once they are committed."""
        if self._writes is None:
            raise StoreError("the database is closed")
        return self._writes.settle(lazy=lazy)

    async def close(self) -> None:
        """Write what is queued, then disconnect."""
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._telling:
            await asyncio.gather(*self._telling, return_exceptions=True)
        if self._writes is not None:
            await self._writes.close()
            self._writes = None
        await self._lease.release()
        await self._database.close()
