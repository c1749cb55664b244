"""The PostgreSQL backend of the broker's state (``database_url``): calls, freezes, budgets,
taint, secrets and the audit chain's signed heads in one database that every broker process
and replica shares."""

from __future__ import annotations

import asyncio

from broker.storage.pg_budgets import PgBudgets
from broker.storage.pg_calls import PgCalls
from broker.storage.pg_connection import PgDatabase
from broker.storage.pg_freezes import PgFreezes
from broker.storage.pg_heads import PgAuditHeads
from broker.storage.pg_queue import QueuedWrites
from broker.storage.pg_schema import MIGRATIONS
from broker.storage.pg_secrets import PgSecrets
from broker.storage.pg_taint import PgTaint
from broker.storage.records import StoreError


class PgState:
    """The StateStore on PostgreSQL. A commit there is durable (``synchronous_commit`` is the
    server's to set), so ``settle`` waits for the commit whatever ``durable`` says."""

    calls: PgCalls
    freezes: PgFreezes
    budgets: PgBudgets
    taint: PgTaint
    secrets: PgSecrets
    heads: PgAuditHeads

    def __init__(self, url: str) -> None:
        self._database = PgDatabase(url)
        self._writes: QueuedWrites | None = None

    @property
    def where(self) -> str:
        """The database, without its password."""
        return self._database.where

    async def open(self) -> None:
        """Connect and migrate; StoreError naming the server (never its password)."""
        await self._database.open(MIGRATIONS)
        self._writes = QueuedWrites(self._database)
        self.calls = PgCalls(self._database)
        self.freezes = PgFreezes(self._database)
        self.budgets = PgBudgets(self._database, self._writes)
        self.taint = PgTaint(self._database, self._writes)
        self.secrets = PgSecrets(self._database, self._writes)
        self.heads = PgAuditHeads(self._database)

    def settle(self, *, durable: bool, lazy: bool = False) -> asyncio.Future[None] | None:
        """None when no queued write is outstanding (lazy ones count only with ``lazy``);
        else done once they are committed."""
        if self._writes is None:
            raise StoreError("the database is closed")
        return self._writes.settle(lazy=lazy)

    async def close(self) -> None:
        """Write what is queued, then disconnect."""
        if self._writes is not None:
            await self._writes.close()
            self._writes = None
        await self._database.close()
