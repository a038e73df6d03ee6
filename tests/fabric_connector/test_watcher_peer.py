"""The Fabric watcher against the development peer: conflicts, malformed events, crashes."""

from __future__ import annotations

import asyncio
import json
import os

from connector.fabric.adapters import FabricStoreSink, chain_id_of
from connector.fabric.gateway import MVCC_READ_CONFLICT, VALID, FabricGateway
from connector.fabric.watcher import FabricBatch, FabricCheckpoint, FabricWatcher
from connector.states import State
from connector.store import OrderRef, WorkOrderStore
from tests.fabric_connector.peer import (
    CHAINCODE,
    CHANNEL,
    WorkerKey,
    emit_raw,
    register_worker,
    submit_order,
    wait_until,
)


async def catch_up(watcher: FabricWatcher, block: int, tx_id: str) -> None:
    """Run the watcher until its checkpoint reaches ``tx_id`` in ``block``."""
    task = asyncio.create_task(watcher.run())
    try:
        await wait_until(
            lambda: task.done() or watcher.checkpoint == FabricCheckpoint(block, tx_id)
        )
        if task.done():
            task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def fresh_worker(gateway: FabricGateway) -> tuple[str, int]:
    """A newly registered worker and the block after its registration."""
    worker_id = os.urandom(32).hex()
    block = await register_worker(gateway, worker_id, WorkerKey().pem)
    return worker_id, block + 1


def watcher_for(gateway: FabricGateway, store: WorkOrderStore,
                worker: tuple[str, int]) -> FabricWatcher:
    sink = FabricStoreSink(store, CHANNEL, CHAINCODE, [worker[0]])
    return FabricWatcher(gateway.chaincode_events, sink, start_block=worker[1])


async def orders_in(store: WorkOrderStore) -> int:
    return sum((await store.counts_by_state()).values())


async def test_event_of_an_mvcc_invalid_transaction_is_not_recorded(
    gateway: FabricGateway, store: WorkOrderStore
) -> None:
    """Of two concurrent submits of one order key in one block, only the valid one is recorded."""
    worker_start = await fresh_worker(gateway)
    worker = worker_start[0]
    work_order_id = os.urandom(32).hex()
    deadline = str(2_000_000_000)
    proposals = [
        gateway.propose("workOrderSubmit", work_order_id, worker, "r", body, deadline)
        for body in ('{"first":1}', '{"second":2}')
    ]
    # Both endorsed before either commits: each read the order key as absent.
    prepared = await asyncio.gather(*(gateway.endorse(p) for p in proposals))
    for p in prepared:
        await gateway.submit(p.tx_id, p.envelope)
    statuses = [await gateway.commit_status(p.tx_id, timeout=30) for p in prepared]
    assert sorted(code for code, _ in statuses) == [VALID, MVCC_READ_CONFLICT]
    assert statuses[0][1] == statuses[1][1], "both transactions share one block"
    valid = prepared[[code for code, _ in statuses].index(VALID)]
    block = statuses[0][1]

    # A later valid event proves the watcher went past the conflicted one.
    _, last_tx, last_block = await submit_order(gateway, os.urandom(32).hex(), worker)
    watcher = watcher_for(gateway, store, worker_start)
    await catch_up(watcher, last_block, last_tx)

    key = bytes.fromhex(json.loads(valid.result)["orderKey"])
    order = await store.get_order(OrderRef.of(chain_id_of(CHANNEL), CHAINCODE, key))
    assert order is not None and order.state is State.RECEIVED
    assert order.tx_hash == bytes.fromhex(valid.tx_id)
    assert order.block_number == block
    assert await orders_in(store) == 2
    point = await store.get_checkpoint(chain_id_of(CHANNEL), CHAINCODE)
    assert point is not None and point.block_number == last_block > block


async def test_malformed_events_from_the_peer_are_quarantined(
    gateway: FabricGateway, store: WorkOrderStore
) -> None:
    """Empty, non-UTF-8 and null-id payloads are recorded malformed; the next order flows."""
    worker_start = await fresh_worker(gateway)
    worker = worker_start[0]
    bad = [
        b"",
        b'{"orders":[{"orderKey":"\xff\xfe"}]}',
        b'{"orders":[{"orderKey":"' + b"ab" * 32 + b'","workOrderId":null,'
        b'"workerId":"w","requesterId":"r","requester":{"mspId":"Org1MSP"},'
        b'"request":"{}"}]}',
    ]
    bad_txs = [await emit_raw(gateway, "WorkOrderSubmitted", payload) for payload in bad]
    key, tx_id, block = await submit_order(gateway, os.urandom(32).hex(), worker)

    watcher = watcher_for(gateway, store, worker_start)
    await catch_up(watcher, block, tx_id)

    assert watcher.recorded == 4
    assert (await store.counts_by_state()).get(State.RECEIVED) == 1
    order = await store.get_order(OrderRef.of(chain_id_of(CHANNEL), CHAINCODE, key))
    assert order is not None
    malformed = await _malformed_rows(store)
    assert {(row[0], row[1]) for row in malformed} == {
        (b, bytes.fromhex(t)) for t, b in bad_txs
    }
    reasons = " | ".join(row[2] for row in malformed)
    assert "empty payload" in reasons
    assert "not UTF-8" in reasons
    assert "workOrderId must be non-empty text, found null" in reasons


async def test_restart_after_two_of_three_events_in_a_block_records_only_the_third(
    gateway: FabricGateway, store: WorkOrderStore
) -> None:
    """A crash between transactions of one block resumes after the last one recorded."""
    worker_start = await fresh_worker(gateway)
    worker = worker_start[0]
    deadline = str(2_000_000_000)
    prepared = [
        await gateway.endorse(gateway.propose(
            "workOrderSubmit", os.urandom(32).hex(), worker, "r", "{}", deadline
        ))
        for _ in range(3)
    ]
    for p in prepared:
        await gateway.submit(p.tx_id, p.envelope)
    blocks = {(await gateway.commit_status(p.tx_id, timeout=30))[1] for p in prepared}
    assert len(blocks) == 1, "the three submits share one block"
    block = blocks.pop()

    class Crash(Exception):
        pass

    class CrashingSink(FabricStoreSink):
        commits = 0

        async def commit(self, batch: FabricBatch) -> None:
            if batch.checkpoint.block == block:
                if self.commits == 2:
                    raise Crash
                self.commits += 1
            await super().commit(batch)

    first = FabricWatcher(
        gateway.chaincode_events, CrashingSink(store, CHANNEL, CHAINCODE, [worker]),
        start_block=worker_start[1],
    )
    task = asyncio.create_task(first.run())
    await wait_until(task.done)
    assert isinstance(task.exception(), Crash)
    point = await store.get_checkpoint(chain_id_of(CHANNEL), CHAINCODE)
    assert point is not None
    assert (point.block_number, point.last_tx_id) == (block, prepared[1].tx_id)

    second = watcher_for(gateway, store, worker_start)
    await catch_up(second, block, prepared[2].tx_id)
    assert second.recorded == 1
    assert (await store.counts_by_state()).get(State.RECEIVED) == 3


async def _malformed_rows(store: WorkOrderStore) -> list[tuple[int, bytes, str]]:
    from sqlalchemy import select

    from connector.store import models as m

    async with store._transaction() as session:
        rows = await session.execute(
            select(m.MalformedLog.block_number, m.MalformedLog.tx_hash, m.MalformedLog.error)
        )
        return [(int(a), bytes(b), str(c)) for a, b, c in rows]
