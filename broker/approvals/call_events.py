"""Who waits for a stored call to move on (``Await``), and the wake-up when it has.

A waiter registers for the call id while it waits and is gone when the wait ends, woken or
timed out: nothing stays in memory for a call nobody awaits. The broker wakes a call's
waiters once the call's final audit record is written (``AuditStage``: a write run by its own
request, whose outcome was stored by the journal) or an approved call has finished
(``Approvals``), so an Await never answers between a stored outcome and its record.

Replicas sharing the state (PostgreSQL) wait for each other's calls too: a wake of a stored
call (a write, an approval's end) is also announced to the other processes, whose waiters
look again at once instead of at their timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class CallEvents:
    """Call id -> the event its waiters wait on, and how many they are."""

    def __init__(self, announce: Callable[[str], None] | None = None) -> None:
        self._waiting: dict[str, tuple[asyncio.Event, int]] = {}
        self._announce = announce  # tells the other processes sharing the state

    async def wait(self, call_id: str, timeout: float) -> None:
        """Until ``call_id`` is woken, or ``timeout`` seconds have passed."""
        event, count = self._waiting.get(call_id, (asyncio.Event(), 0))
        self._waiting[call_id] = (event, count + 1)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            current = self._waiting.get(call_id)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._waiting[call_id]
                else:
                    self._waiting[call_id] = (event, current[1] - 1)

    def wake(self, call_id: str, *, everywhere: bool = False) -> None:
        """Wake whoever waits for ``call_id`` here (nobody, mostly: a dict lookup); with
        ``everywhere``, in the other processes sharing the state as well."""
        entry = self._waiting.pop(call_id, None)
        if entry is not None:
            entry[0].set()
        if everywhere and self._announce is not None:
            self._announce(call_id)

    def wake_all(self) -> None:
        """Wake every waiter: each looks at its call again (after a lost change feed)."""
        waiting, self._waiting = self._waiting, {}
        for event, _ in waiting.values():
            event.set()

    def waiting(self) -> int:
        """How many calls someone waits for now."""
        return len(self._waiting)
