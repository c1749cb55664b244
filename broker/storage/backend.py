"""Which backend holds a broker's state and audit trail: the one place that chooses.

The state is the embedded SQLite file in ``data_dir`` (``broker.db``) and the audit trail
``audit.db`` beside it; or, with ``database_url`` (or ``database_url_env``) set, both are in a
PostgreSQL database that replicas share. Everything else takes the interfaces of
``broker.storage.interfaces`` and never names a backend.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path

from broker.errors import ConfigError
from broker.settings import BrokerSettings
from broker.storage.interfaces import AuditReader, StateStore
from broker.storage.sqlite_audit import SqliteAuditReader
from broker.storage.sqlite_connection import BUSY_TIMEOUT_S, READ_BUSY_TIMEOUT_S
from broker.storage.sqlite_schema import audit_database
from broker.storage.sqlite_state import SqliteState
from broker.storage.urls import redacted


def postgres_url(settings: BrokerSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The PostgreSQL URL of the state, if it is on PostgreSQL; ConfigError when
    ``database_url_env`` names a variable that is not set or holds no such URL."""
    name = settings.database_url_env
    if name is None:
        return settings.database_url
    value = (os.environ if env is None else env).get(name, "")
    if not value:
        raise ConfigError("database_url_env", f"the environment variable {name} is not set")
    if not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database_url_env", f"{name} must hold a postgresql:// URL")
    return value


def redis_url(settings: BrokerSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The Redis URL of the shared limits, if any; ConfigError when ``redis_url_env`` names a
    variable that is not set or holds no such URL."""
    name = settings.redis_url_env
    if name is None:
        return settings.redis_url
    value = (os.environ if env is None else env).get(name, "")
    if not value:
        raise ConfigError("redis_url_env", f"the environment variable {name} is not set")
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis_url_env", f"{name} must hold a redis:// URL")
    return value


def state_store(
    settings: BrokerSettings,
    *,
    patient: bool = False,
    env: Mapping[str, str] | None = None,
    place: str = "",
) -> StateStore:
    """The broker's state (not yet open). ``patient``: wait seconds, not milliseconds, for a
    busy SQLite database (a command beside a running broker, not the broker itself).
    ``place``: the host and data directory lock a broker holds (its lease, on PostgreSQL)."""
    url = postgres_url(settings, env)
    if url is not None:
        # psycopg takes 130 ms to import: a broker on SQLite, and every command, skips it
        pg_state = importlib.import_module("broker.storage.pg_state")
        store: StateStore = pg_state.PgState(url, place)
        return store
    busy = READ_BUSY_TIMEOUT_S if patient else BUSY_TIMEOUT_S
    return SqliteState(settings.database, durability=settings.durability, busy_timeout=busy)


def state_location(settings: BrokerSettings, env: Mapping[str, str] | None = None) -> str:
    """Where the state is, for a message: the SQLite file, or the database URL without its
    password."""
    url = postgres_url(settings, env)
    if url is None:
        return str(settings.database)
    return redacted(url)


def audit_reader(settings: BrokerSettings, env: Mapping[str, str] | None = None) -> AuditReader:
    """A reader of the broker's audit trail: with the state, on PostgreSQL (one chain for
    every replica), else ``audit.db`` in data_dir."""
    url = postgres_url(settings, env)
    if url is not None:
        pg_audit = importlib.import_module("broker.storage.pg_audit")  # see state_store
        reader: AuditReader = pg_audit.PgAuditReader(url)
        return reader
    return SqliteAuditReader(settings.database)


def audit_reader_at(database: Path) -> AuditReader:
    """A reader of the audit trail kept beside (or in) the SQLite file ``database``."""
    return SqliteAuditReader(database)


def trail_location(settings: BrokerSettings, env: Mapping[str, str] | None = None) -> str:
    """Where the audit trail is, for a message: audit.db, or the database URL without its
    password."""
    url = postgres_url(settings, env)
    return str(audit_path(settings)) if url is None else redacted(url)


def audit_path(settings: BrokerSettings) -> Path:
    """Where the audit writer process keeps the trail (it is handed this path)."""
    return audit_database(settings.database)
