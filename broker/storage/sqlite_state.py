"""The embedded backend of the broker's state: ``broker.db`` (SQLite, WAL) in the data
directory, written with group commit on the event loop and read on a helper thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from broker.storage.group_commit import Durability, GroupCommit, open_for_writes
from broker.storage.records import StoreError
from broker.storage.sqlite_budgets import SqliteBudgets
from broker.storage.sqlite_calls import SqliteCalls
from broker.storage.sqlite_connection import BUSY_TIMEOUT_S, Reads
from broker.storage.sqlite_freezes import SqliteFreezes
from broker.storage.sqlite_heads import SqliteAuditHeads
from broker.storage.sqlite_schema import MIGRATIONS
from broker.storage.sqlite_secrets import SqliteSecrets
from broker.storage.sqlite_taint import SqliteTaint


class SqliteState:
    """The StateStore on SQLite: calls, freezes, budgets, taint, secrets and the audit
    chain's signed heads in one file."""

    calls: SqliteCalls
    freezes: SqliteFreezes
    budgets: SqliteBudgets
    taint: SqliteTaint
    secrets: SqliteSecrets
    heads: SqliteAuditHeads

    def __init__(
        self, path: Path, *, durability: Durability = "fsync", busy_timeout: float = BUSY_TIMEOUT_S
    ) -> None:
        self.path = path
        self._durability = durability
        self._busy_timeout = busy_timeout  # the broker fails fast; a command may wait longer
        self._writes: GroupCommit | None = None
        self._reads: Reads | None = None

    async def open(self) -> None:
        """Open (creating and migrating if needed); StoreError naming the file if it cannot."""
        try:
            conn = await asyncio.to_thread(
                open_for_writes, self.path, MIGRATIONS, self._busy_timeout
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None
        self._writes = GroupCommit(conn, self.path, self._durability)
        self._reads = Reads(self.path)
        self.calls = SqliteCalls(self._writes, self._reads)
        self.freezes = SqliteFreezes(self._writes, self._reads)
        self.budgets = SqliteBudgets(self._writes, self._reads)
        self.taint = SqliteTaint(self._writes, self._reads)
        self.secrets = SqliteSecrets(self._writes, self._reads)
        self.heads = SqliteAuditHeads(self._writes, self._reads)

    @property
    def shared_budgets(self) -> None:
        """None: this process alone spends from the budgets."""
        return None

    @property
    def nonces(self) -> None:
        """None: this process alone claims nonces (identity.ReplayGuard)."""
        return None

    @property
    def shared(self) -> bool:
        """One process holds this state (the data directory's lock)."""
        return False

    def watch(self, handler: Callable[[str, str], None]) -> None:
        """Nothing to watch: this process alone holds the data directory."""

    def announce(self, topic: str, key: str = "") -> None:
        """Nobody else to tell."""

    def settle(self, *, durable: bool, lazy: bool = False) -> asyncio.Future[None] | None:
        """None when no queued write is outstanding (lazy ones count only with ``lazy``);
        else done once they are committed."""
        if self._writes is None:
            raise StoreError("the database is closed")
        return self._writes.settle(durable=durable, lazy=lazy)

    async def close(self) -> None:
        """Let queued writes commit, then close both connections and their threads."""
        if self._writes is not None:
            await self._writes.close()
            self._writes = None
        if self._reads is not None:
            await asyncio.to_thread(self._reads.close)
            self._reads = None
