"""Fixtures for the store's conformance suite: every test runs on SQLite and
on PostgreSQL (one private cluster per session, a fresh database per test)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.devdb import PostgresCluster, find_bin_dir, private_postgres
from connector.store import WorkOrderStore, open_store
from connector.store.models import Base
from enclave_bridge.errors import ConfigurationError

SHARED_DATABASE = "store_suite"


class FakeClock:
    """A clock the test moves by hand, so ages and orderings are exact."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _postgres_available() -> bool:
    try:
        find_bin_dir()
    except ConfigurationError:
        return False
    return (
        shutil.which("createdb") is not None or (find_bin_dir() / "createdb").exists()
    )


async def _migrate(url: str) -> None:
    async with open_store(url):
        pass


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    if not _postgres_available():
        pytest.skip("PostgreSQL server binaries are not installed")
    with private_postgres() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_shared(pg_cluster: PostgresCluster) -> str:
    """One PostgreSQL database migrated to head; the store fixture empties it."""
    url = pg_cluster.create_database(SHARED_DATABASE)
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head once, copied for every test."""
    path = tmp_path_factory.mktemp("template") / "store.db"
    asyncio.run(_migrate(f"sqlite:///{path}"))
    return path


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database at head, on each of the two dialects."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "store.db")
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("pg_shared")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def store(store_url: str, clock: FakeClock) -> AsyncIterator[WorkOrderStore]:
    async with open_store(store_url, clock=clock) as opened:
        if opened.dialect == "postgresql":
            # The PostgreSQL suite shares one database: empty it first. On
            # these few rows DELETE takes ~10 ms, TRUNCATE ~60 ms and a fresh
            # database ~350 ms.
            async with opened._engine.begin() as connection:
                for table in reversed(Base.metadata.sorted_tables):
                    await connection.execute(table.delete())
        yield opened
