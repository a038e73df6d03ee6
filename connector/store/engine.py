"""Engines for the two supported databases, tuned for how the store uses them.

SQLite gets WAL (readers never wait for the writer), foreign keys, a busy
timeout, and ``BEGIN IMMEDIATE`` for every transaction: a transaction that
reads and then writes takes the write lock up front, so two connections
never both hold a read snapshot and then fail to upgrade it (SQLite answers
that with an immediate SQLITE_BUSY that no busy timeout retries).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from enclave_bridge.errors import ConfigurationError

# Writers queue behind one another; a large watcher batch commits well
# within this, so waiting longer only hides a stuck process.
SQLITE_BUSY_TIMEOUT_S = 15.0
# One role per process rarely needs more; the pool engineer's claimers
# each hold one connection for a claim and give it back.
POSTGRES_POOL_SIZE = 10

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def database_url(url: str | URL) -> URL:
    """Parse ``url`` and pick the async driver: ``sqlite:///x.db`` works too."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigurationError(
            f"unsupported database {backend!r} in the store URL: use sqlite:///path "
            "or postgresql://user@host/db"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigurationError(
            "the store needs an SQLite file (each connection to :memory: would see "
            "its own empty database); give a path, for a test one in a temp folder"
        )

    return parsed.set(drivername=_DRIVERS[backend])


def create_engine(url: str | URL) -> AsyncEngine:
    """An async engine for ``url`` with the settings above."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}
        )
        _tune_sqlite(engine)
        return engine

    return create_async_engine(parsed, pool_size=POSTGRES_POOL_SIZE, pool_pre_ping=True)


def _tune_sqlite(engine: AsyncEngine) -> None:
    busy_ms = int(SQLITE_BUSY_TIMEOUT_S * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            f"busy_timeout={busy_ms}",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
