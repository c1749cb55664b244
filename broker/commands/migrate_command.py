"""``broker migrate``: bring the PostgreSQL schema up to date, and with ``--from-sqlite`` move
a broker's SQLite data directory (state and audit trail) into it.

A broker starting on PostgreSQL migrates by itself (replicas take turns under a lock); this
command does it ahead of a rollout, and is the one way from SQLite to PostgreSQL. It takes the
data directory's lock: the SQLite broker must be stopped first.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from pathlib import Path
from typing import Any

from broker.datadir_lock import DataDirLock
from broker.errors import ConfigError
from broker.settings import BrokerSettings, load_settings
from broker.storage.backend import postgres_url
from broker.storage.sqlite_audit import SqliteAuditReader
from broker.storage.sqlite_state import SqliteState


def add_migrate_command(commands: Any) -> None:
    """Register ``broker migrate``."""
    migrate = commands.add_parser(
        "migrate", help="bring the PostgreSQL schema up to date (and move a SQLite broker in)"
    )
    migrate.add_argument(
        "--config", type=Path, required=True, help="the broker's config (with database_url)"
    )
    migrate.add_argument(
        "--from-sqlite",
        action="store_true",
        help="copy data_dir's broker.db and audit.db into the (empty) database",
    )
    migrate.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    url = postgres_url(settings)
    if url is None:
        raise ConfigError(
            str(args.config),
            "no PostgreSQL to migrate: set database_url (or database_url_env) to the database",
        )
    # psycopg is imported only by commands that use PostgreSQL (130 ms)
    pg_schema = importlib.import_module("broker.storage.pg_schema")
    version = asyncio.run(_schema(url, pg_schema.MIGRATIONS))
    print(f"schema at version {version}")
    if not args.from_sqlite:
        return 0
    lock = DataDirLock(settings.data_dir)
    if not settings.database.exists():
        raise ConfigError(str(settings.database), "no SQLite broker here to migrate from")
    lock.acquire()  # the SQLite broker must not write while it is copied
    try:
        asyncio.run(_bring_current(settings))
        pg_import = importlib.import_module("broker.storage.pg_import")
        copied = pg_import.import_sqlite(settings.data_dir, url)
    finally:
        lock.release()
    for table, rows in copied:
        print(f"  {table}: {rows} row(s)")
    print(
        f"copied {settings.data_dir} into the database; check the trail with "
        f"`broker audit verify --config {args.config}`"
    )
    return 0


async def _schema(url: str, migrations: list[str]) -> int:
    pg_connection = importlib.import_module("broker.storage.pg_connection")
    database = pg_connection.PgDatabase(url, pool_size=1)
    await database.open(migrations)
    await database.close()
    return len(migrations)


async def _bring_current(settings: BrokerSettings) -> None:
    """Migrate the SQLite files to this broker's version first: the copy maps columns as this
    version has them."""
    state = SqliteState(settings.database, durability=settings.durability)
    await state.open()
    await state.close()
    trail = SqliteAuditReader(settings.database)
    await trail.prepare()
    await trail.close()
