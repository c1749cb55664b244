"""Retention: what the broker keeps in its state only as long as a check can need it.

Every ``retention_interval`` the sweep drops calls in a final state older than
``calls_retention`` (their idempotency keys with them: a key retried after that runs anew),
outside values and text older than ``taint_retention`` (never less than the longest
``taint_window`` of a policy in force, so no window loses what it looks at), and budget use
of days and of idle tasks older than ``budget_retention``. Pending, approved and executing
calls, and lost outcomes not yet reconciled, are never dropped. The audit trail keeps every
call regardless (``broker audit prune`` is its own retention). Each store deletes in short
batches, so a sweep never holds the database for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from broker.settings import BrokerSettings
from broker.storage.interfaces import StateStore
from broker.storage.records import StoreError

log = logging.getLogger(__name__)


class Retention:
    """Sweeps the state store; ``longest_taint_window`` reads the policies in force."""

    def __init__(
        self,
        state: StateStore,
        settings: BrokerSettings,
        longest_taint_window: Callable[[], float],
    ) -> None:
        self._state = state
        self._settings = settings
        self._longest_taint_window = longest_taint_window

    async def sweep(self, now_ms: int) -> dict[str, int]:
        """One sweep: how many calls, outside rows and budgets were dropped."""
        settings = self._settings
        taint_s = max(settings.taint_retention, self._longest_taint_window())
        budget_before_ms = now_ms - int(settings.budget_retention * 1000)
        day = datetime.fromtimestamp(budget_before_ms / 1000, UTC).strftime("%Y-%m-%d")
        return {
            "calls": await self._state.calls.prune(now_ms - int(settings.calls_retention * 1000)),
            "taint": await self._state.taint.prune(now_ms - int(taint_s * 1000)),
            "budgets": await self._state.budgets.prune(day, budget_before_ms),
        }

    async def run(self, now_ms: Callable[[], int]) -> None:
        """Sweep at once, then every ``retention_interval``; a failed sweep is logged and
        tried again at the next one."""
        while True:
            try:
                dropped = await self.sweep(now_ms())
            except StoreError as exc:
                log.error("retention sweep failed (tried again later): %s", exc)
            else:
                if any(dropped.values()):
                    log.info("retention: dropped %s", dropped)
            await asyncio.sleep(self._settings.retention_interval)  # the sweep's period
