"""How a command-line command reaches the broker's storage: the async interfaces of
``broker.storage``, on a short-lived event loop of the command's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from broker.settings import BrokerSettings
from broker.storage.backend import audit_reader_at, state_store
from broker.storage.interfaces import AuditReader, StateStore

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


def with_audit(database: Path, work: Callable[[AuditReader], Awaitable[T]]) -> T:
    """``work(reader)`` with a reader of the audit trail beside ``database``."""

    async def run() -> T:
        reader = audit_reader_at(database)
        try:
            return await work(reader)
        finally:
            await reader.close()

    return asyncio.run(run())
