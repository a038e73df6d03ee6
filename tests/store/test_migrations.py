"""Alembic revisions: upgrading a database that holds data, on both dialects."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.engine import Connection

from connector.devdb import PostgresCluster
from connector.store import State, open_store
from connector.store.engine import create_engine
from connector.store.migrate import current_revision, upgrade
from connector.store.models import Base

from .conftest import FakeClock
from .factories import CHAIN, REGISTRY, key, ref

T0 = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no schema yet) on each dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/old.db"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"migrate_{os.getpid()}_{Path(tmp_path).name}")


def _fill_revision_0001(connection: Connection) -> None:
    """Rows written the way revision 0001's schema knew them."""
    tables = MetaData()
    orders = Table("work_orders", tables, autoload_with=connection)
    assert "completion_block" not in orders.c
    results = Table("results", tables, autoload_with=connection)
    checkpoints = Table("checkpoints", tables, autoload_with=connection)
    nonces = Table("nonces", tables, autoload_with=connection)

    common = {
        "chain_id": str(CHAIN),
        "contract": REGISTRY.lower(),
        "worker_id": "ab" * 32,
        "requester_id": "cd" * 32,
        "requester_address": None,
        "block_hash": b"\x01" * 32,
        "tx_hash": b"\x02" * 32,
        "attempts": 1,
        "received_at": T0,
        "updated_at": T0,
    }
    connection.execute(
        orders.insert(),
        [
            {
                **common,
                "order_key": key(n),
                "work_order_id": f"{n:064x}",
                "request": b"old request %d" % n,
                "request_keccak": b"\x03" * 32,
                "block_number": 100 + n,
                "log_index": n,
                "state": state,
            }
            for n, state in [(1, "SUBMITTED"), (2, "RECEIVED")]
        ],
    )
    order_id = (
        connection.execute(orders.select().where(orders.c.order_key == key(1))).one().id
    )
    connection.execute(
        results.insert().values(
            work_order_id=order_id,
            status=0,
            response=b"old response",
            signature=b"\x1c" * 65,
            request_hash=b"\x04" * 32,
            created_at=T0,
        )
    )
    connection.execute(
        checkpoints.insert().values(
            chain_id=str(CHAIN),
            contract=REGISTRY.lower(),
            stream="work_orders",
            block_number=102,
            updated_at=T0,
        )
    )
    connection.execute(
        nonces.insert().values(chain_id=str(CHAIN), sender="0xrelayer", next_nonce=41)
    )


def _index_names(connection: Connection) -> set[str]:
    return {
        index["name"] or "" for index in inspect(connection).get_indexes("work_orders")
    }


async def test_upgrade_keeps_rows_and_the_new_column_works(
    empty_url: str, clock: FakeClock
) -> None:
    """Rows written at revision 0001 survive the upgrade; 0002's and 0003's columns work."""
    engine = create_engine(empty_url)
    try:
        await upgrade(engine, "0001")
        async with engine.begin() as connection:
            await connection.run_sync(_fill_revision_0001)
        assert await current_revision(engine) == "0001"
    finally:
        await engine.dispose()

    async with open_store(empty_url, clock=clock) as store:
        survivor = await store.get_order(ref(1))
        assert survivor is not None
        assert (
            survivor.state is State.SUBMITTED and survivor.request == b"old request 1"
        )
        assert survivor.received_at == T0 and survivor.completion_block is None
        assert survivor.callback_gas == 0
        assert survivor.result is not None
        assert survivor.result.response == b"old response"
        point = await store.get_checkpoint(CHAIN, REGISTRY)
        assert point is not None and point.block_number == 102
        assert await store.allocate_nonce(CHAIN, "0xRelayer") == 41

        await store.mark_completed(ref(1), block_number=107)
        done = await store.get_order(ref(1))
        assert done is not None and done.completion_block == 107
        [claimed] = await store.claim_next(5, "pool-a")
        assert claimed.ref == ref(2) and claimed.attempts == 2

    engine = create_engine(empty_url)
    try:
        assert await current_revision(engine) == "0003"
        async with engine.connect() as connection:
            assert "ix_work_orders_state_updated" in await connection.run_sync(
                _index_names
            )
    finally:
        await engine.dispose()


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_models_describe_the_head_revision(empty_url: str) -> None:
    """The ORM models and the schema the revisions build are the same."""
    engine = create_engine(empty_url)
    try:
        await upgrade(engine)
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()

    assert differences == []
