"""One conformance suite for every chain's watcher: the Ethereum log watcher on
anvil and the Fabric chaincode-event watcher on the development peer.

Each case runs the production watcher and its production store sink against
a real node, through the harnesses in ``harnesses.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from connector.states import State
from connector.store import OrderRef, WorkOrderStore, open_store
from connector.store import models as m
from tests.conformance.harnesses import Harness, ethereum_harness, fabric_harness

HARNESSES = [
    pytest.param(ethereum_harness, id="ethereum-anvil", marks=pytest.mark.anvil),
    pytest.param(fabric_harness, id="fabric-devpeer"),
]


@pytest.fixture(params=HARNESSES)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    opener: Any = request.param
    context: AbstractAsyncContextManager[Harness] = opener(tmp_path / "node")
    async with context as opened:
        yield opened


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[WorkOrderStore]:
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as opened:
        yield opened


async def malformed_count(store: WorkOrderStore) -> int:
    async with store._transaction() as session:
        return int((await session.execute(
            select(func.count()).select_from(m.MalformedLog)
        )).scalar_one())


async def test_the_watcher_conforms(harness: Harness, store: WorkOrderStore) -> None:
    """Orders once each in order, checkpoint advancing, no repeats after a restart,
    malformed input quarantined without stalling, completions settling orders."""
    first_keys = await harness.submit_orders(2)
    await harness.emit_malformed()
    later_keys = await harness.submit_orders(2)
    keys = first_keys + later_keys

    watcher = harness.watcher(store)
    await watcher.catch_up()
    point = await store.get_checkpoint(harness.chain_id, harness.contract)
    assert point is not None
    assert harness.seen.keys == keys, "every order once, in chain order"
    assert await malformed_count(store) == 1, "the bad event is quarantined"
    refs = [OrderRef.of(harness.chain_id, harness.contract, k) for k in keys]
    orders = [await store.get_order(ref) for ref in refs]
    assert all(o is not None and o.state is State.RECEIVED for o in orders)
    positions = [(o.block_number, o.log_index) for o in orders if o is not None]
    assert positions == sorted(positions)

    restarted = harness.watcher(store)
    await restarted.catch_up()
    assert harness.seen.keys == keys, "a restart repeats nothing"

    await harness.complete(keys[0])
    more = await harness.submit_orders(1)
    await restarted.catch_up()
    advanced = await store.get_checkpoint(harness.chain_id, harness.contract)
    assert advanced is not None and advanced.block_number > point.block_number
    assert harness.seen.keys == keys + more
    completed = await store.get_order(refs[0])
    assert completed is not None and completed.state is State.COMPLETED
    assert await malformed_count(store) == 1
