"""How a command-line command reaches the broker's storage: the async interfaces of
``broker.storage``, on a short-lived event loop of the command's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from broker.settings import BrokerSettings
from broker.storage.backend import audit_reader, audit_reader_at, state_store, trail_location
from broker.storage.interfaces import AuditReader, StateStore
from broker.storage.records import StoreError

T = TypeVar("T")


def with_state(settings: BrokerSettings, work: Callable[[StateStore], Awaitable[T]]) -> T:
    """``work(state)`` with the broker's state open (created if need be), then closed."""

    async def run() -> T:
        state = state_store(settings, patient=True)
        await state.open()
        try:
            return await work(state)
        finally:
            await state.close()

    return asyncio.run(run())


def with_audit(
    source: BrokerSettings | Path,
    work: Callable[[AuditReader], Awaitable[T]],
    *,
    required: bool = True,
) -> T:
    """``work(reader)`` with a reader of the broker's audit trail: wherever its settings put
    it, or beside the SQLite file ``source``. With ``required``, a trail that does not exist
    is a StoreError that says so (the command's exit status 4, as for a trail unreadable)."""

    async def run() -> T:
        if isinstance(source, BrokerSettings):
            reader, where = audit_reader(source), trail_location(source)
        else:
            reader, where = audit_reader_at(source), str(source)
        try:
            if required and not await reader.present():
                raise StoreError(f"there is no audit trail at {where} (has the broker run?)")
            return await work(reader)
        finally:
            await reader.close()

    return asyncio.run(run())
