"""Run the store's Alembic revisions from code (no alembic.ini at run time)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import connector.migrations

MIGRATIONS_DIR = Path(connector.migrations.__file__).resolve().parent
HEAD = "head"
# Several processes may open one PostgreSQL database at once; this
# transaction-scoped advisory lock lets only one of them migrate it.
_MIGRATION_LOCK_KEY = 0x7463627264676D31  # "tcbrdgm1"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config for the packaged revisions, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection

    return config


async def upgrade(engine: AsyncEngine, revision: str = HEAD) -> None:
    """Bring the database up to ``revision`` (default: the newest) in one transaction."""
    async with engine.begin() as connection:
        await _lock_for_migration(connection)
        await connection.run_sync(_upgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def _lock_for_migration(connection: AsyncConnection) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
        )


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
