"""How the store sets up each database: SQLite pragmas, the private cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import (
    IntegrityError,
    InterfaceError,
    NoResultFound,
    OperationalError,
)

from connector.devdb import PostgresCluster
from connector.store import open_store
from connector.store.engine import database_url
from connector.store.repository import translate_error
from enclave_bridge.errors import ConfigurationError, StoreError


async def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    """An SQLite store uses WAL, enforces foreign keys and waits when busy."""
    async with (
        open_store(f"sqlite:///{tmp_path}/s.db") as store,
        store._engine.connect() as connection,
    ):
        mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
        keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar()
        busy = (await connection.execute(text("PRAGMA busy_timeout"))).scalar()

    assert (mode, keys) == ("wal", 1)
    assert busy is not None and busy >= 1000


def test_urls_pick_the_async_drivers_and_refuse_others() -> None:
    """Plain sqlite/postgresql URLs get async drivers; others are refused."""
    assert database_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert database_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(ConfigurationError, match="unsupported database"):
        database_url("mysql://u@h/db")
    with pytest.raises(ConfigurationError, match="needs an SQLite file"):
        database_url("sqlite://")


@pytest.mark.postgres
async def test_private_cluster_listens_on_loopback_only(
    pg_cluster: PostgresCluster,
) -> None:
    """The test cluster listens on 127.0.0.1 and keeps its socket in its own folder."""
    async with (
        open_store(pg_cluster.url(), migrate=False) as store,
        store._engine.connect() as connection,
    ):
        listen = (await connection.execute(text("SHOW listen_addresses"))).scalar()
        sockets = (
            await connection.execute(text("SHOW unix_socket_directories"))
        ).scalar()

    assert listen == "127.0.0.1"
    assert sockets == str(pg_cluster.socket_dir)
    assert pg_cluster.data_dir.is_relative_to(pg_cluster.socket_dir)


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (IntegrityError("INSERT", {}, Exception("duplicate key")), "conflicts"),
        (OperationalError("BEGIN", {}, Exception("database is locked")), "reached"),
        (ConnectionRefusedError(111, "refused"), "reached"),
        (InterfaceError("SELECT", {}, Exception("closed")), "failed an operation"),
        (NoResultFound(), "failed an operation"),
    ],
    ids=["integrity", "operational", "os", "interface", "other"],
)
def test_every_database_error_becomes_a_store_error(
    error: BaseException, says: str
) -> None:
    """Each family of SQLAlchemy and driver errors maps to a StoreError message."""
    translated = translate_error(error)

    assert isinstance(translated, StoreError)
    assert says in str(translated)
