"""Which backend holds a broker's state and audit trail: the one place that chooses.

Today that is always the embedded SQLite files in ``data_dir`` (``broker.db``, ``audit.db``).
Everything else takes the interfaces of ``broker.storage.interfaces`` and never names a
backend.
"""

from __future__ import annotations

from pathlib import Path

from broker.settings import BrokerSettings
from broker.storage.interfaces import AuditReader, StateStore
from broker.storage.sqlite_audit import SqliteAuditReader
from broker.storage.sqlite_connection import BUSY_TIMEOUT_S, READ_BUSY_TIMEOUT_S
from broker.storage.sqlite_schema import audit_database
from broker.storage.sqlite_state import SqliteState


def state_store(settings: BrokerSettings, *, patient: bool = False) -> StateStore:
    """The broker's state (not yet open). ``patient``: wait seconds, not milliseconds, for a
    busy database (a command beside a running broker, not the broker itself)."""
    busy = READ_BUSY_TIMEOUT_S if patient else BUSY_TIMEOUT_S
    return SqliteState(settings.database, durability=settings.durability, busy_timeout=busy)


def audit_reader(settings: BrokerSettings) -> AuditReader:
    """A reader of the broker's audit trail."""
    return SqliteAuditReader(settings.database)


def audit_reader_at(database: Path) -> AuditReader:
    """A reader of the audit trail kept beside (or in) the database file ``database``."""
    return SqliteAuditReader(database)


def audit_path(settings: BrokerSettings) -> Path:
    """Where the audit writer process keeps the trail (it is handed this path)."""
    return audit_database(settings.database)
