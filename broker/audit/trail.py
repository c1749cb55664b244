"""What the broker appends audit records through: the audit writer's pipe, in step with the
broker's own database.

A record leaves with the audit writer's next batch. Before a caller relies on it, the broker's
queued writes (budget use, taint: nobody waits for them) are committed too, so whatever a
call changed is kept before its answer leaves. A record that cannot be written stops the call:
``record`` turns the failure into AUDIT_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from broker import errors
from broker.audit.pipe import AuditPipe
from broker.storage.records import CHAINED, AuditRow, StoreError

log = logging.getLogger(__name__)
Settle = Callable[..., Awaitable[None] | None]  # StateStore.settle(durable=...)


class AuditTrail:
    """Appends records to the chain (the audit writer gives each its place)."""

    def __init__(self, pipe: AuditPipe, settle: Settle) -> None:
        self._pipe = pipe
        self._settle = settle

    async def start(self) -> None:
        """Start the audit writer before the first record needs it; StoreError if it cannot."""
        await self._pipe.start()

    async def close(self) -> None:
        """Let the writer finish what it has and stop."""
        await self._pipe.close()

    async def append(self, row: AuditRow, *, durable: bool = True) -> None:
        """Append a record; returns when it is durable, or with ``durable=False`` once it is
        committed (what can fail, a full disk, a read-only or locked database, fails by then;
        the fsync follows with the next durable record). StoreError when it cannot be."""
        written = self.queue(row, durable=durable)
        settled = self._settle(durable=durable)
        if settled is not None:
            await settled  # a failed batch fails the call; the record goes on alone
        await written

    def queue(self, row: AuditRow, *, durable: bool = False) -> asyncio.Future[None]:
        """Send a record with the next batch without waiting: the future is done once it is
        committed (or, with ``durable``, on disk); await it before relying on it."""
        return self._pipe.append(row[:CHAINED], durable=durable)

    async def checkpoint_if_due(self, interval_s: float) -> None:
        """A signed checkpoint when records came in since the last one and ``interval_s``
        passed (the audit writer knows both)."""
        await self._pipe.checkpoint_if_due(interval_s)

    async def record(
        self,
        row: AuditRow,
        call_id: str,
        *,
        durable: bool = True,
        after: asyncio.Future[None] | None = None,
    ) -> None:
        """Append a record (and make sure the one queued ``after`` was written too: it went in
        an earlier or the same batch); AUDIT_UNAVAILABLE, and an error in the log, when it
        cannot be."""
        try:
            await self.append(row, durable=durable)
            if after is not None:
                await after
        except StoreError as exc:
            raise unavailable(call_id, exc) from None


def unavailable(call_id: str, exc: StoreError) -> errors.AuditUnavailable:
    """The refusal of a call whose audit record could not be written (logged)."""
    log.error("audit write failed for call %s: %s", call_id, exc)
    return errors.AuditUnavailable(
        f"the audit record of call {call_id} could not be written, so the call stops "
        "here (nothing more is done and the answer is withheld); an operator must check "
        "the broker's database"
    )
