"""The Fabric submitter against the development peer: restarts and MVCC conflicts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from fabric_protos.common import common_pb2

from connector.fabric.adapters import FabricStoreSink, chain_id_of
from connector.fabric.gateway import FabricGateway
from connector.fabric.submitter import FabricSubmitter
from connector.fabric.watcher import FabricCheckpoint, FabricWatcher
from connector.states import State
from connector.store import OrderRef, WorkOrderStore
from enclave_bridge.result_signature import FabricDomain, sign_fabric
from tcbridge_devpeer.launcher import DevPeerProcess
from tests.fabric_connector.peer import (
    CHAINCODE,
    CHANNEL,
    WorkerKey,
    identity_of,
    register_worker,
    submit_order,
    wait_until,
)

DOMAIN = FabricDomain(CHANNEL, CHAINCODE)
RESPONSE = b'{"jsonrpc":"2.0","id":1,"result":{"ok":true}}'


class Crash(Exception):
    """Stands for the process dying at a chosen point."""


class ScriptedGateway(FabricGateway):
    """The real gateway client, with a crash point and a count of Submit calls."""

    crash_in_submit = False
    crash_in_commit_status = False
    before_submit: object = None

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.submits: list[str] = []

    async def submit(self, tx_id: str, envelope: common_pb2.Envelope) -> None:
        if self.crash_in_submit:
            self.crash_in_submit = False
            raise Crash
        if callable(self.before_submit):
            hook, self.before_submit = self.before_submit, None
            await hook()
        self.submits.append(tx_id)
        await super().submit(tx_id, envelope)

    async def commit_status(self, tx_id: str, timeout: float | None = None) -> tuple[int, int]:
        if self.crash_in_commit_status:
            self.crash_in_commit_status = False
            raise Crash
        return await super().commit_status(tx_id, timeout)


@dataclass
class ReadyOrder:
    ref: OrderRef
    work_order_id: str
    signature: bytes
    watcher: FabricWatcher


@pytest.fixture
async def scripted(devpeer: DevPeerProcess) -> AsyncIterator[ScriptedGateway]:
    gw = ScriptedGateway(devpeer.address, identity_of(devpeer), CHANNEL, CHAINCODE)
    yield gw
    await gw.close()


async def ready_order(gateway: FabricGateway, store: WorkOrderStore) -> ReadyOrder:
    """A registered worker, one submitted order recorded by the watcher, its signed result saved."""
    worker = WorkerKey()
    worker_id = os.urandom(32).hex()
    start = await register_worker(gateway, worker_id, worker.pem) + 1
    work_order_id = os.urandom(32).hex()
    request = '{"work":"order"}'
    key, tx_id, block = await submit_order(gateway, work_order_id, worker_id, request)
    watcher = FabricWatcher(
        gateway.chaincode_events,
        FabricStoreSink(store, CHANNEL, CHAINCODE, [worker_id]),
        start_block=start,
    )
    await follow(watcher, lambda: watcher.checkpoint == FabricCheckpoint(block, tx_id))

    [claimed] = await store.claim_next(1, "test")
    signature = sign_fabric(
        worker.private, DOMAIN, work_order_id, hashlib.sha256(request.encode()).digest(),
        hashlib.sha256(RESPONSE).digest(), 0,
    )
    await store.save_result(
        claimed.ref, status=0, response=RESPONSE, signature=signature,
        request_hash=b"\x00" * 32, claimer="test",
    )
    assert claimed.ref.order_key == bytes.fromhex(key)
    return ReadyOrder(claimed.ref, work_order_id, signature, watcher)


async def follow(watcher: FabricWatcher, done: object) -> None:
    """Run the watcher until ``done()``."""
    assert callable(done)
    task = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: task.done() or done())
        if task.done():
            task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def state_of(store: WorkOrderStore, ref: OrderRef) -> State:
    order = await store.get_order(ref)
    assert order is not None
    return order.state


async def onchain(gateway: FabricGateway, ref: OrderRef) -> dict[str, object]:
    raw = await gateway.evaluate("workOrderGet", ref.order_key.hex())
    found = json.loads(raw)
    assert isinstance(found, dict)
    return found


async def test_restart_asks_commit_status_instead_of_submitting_again(
    scripted: ScriptedGateway, store: WorkOrderStore
) -> None:
    """A crash after Submit: the next run finds the stored tx committed and sends nothing."""
    order = await ready_order(scripted, store)
    scripted.submits.clear()
    first = FabricSubmitter(scripted, store)
    scripted.crash_in_commit_status = True
    with pytest.raises(Crash):
        await first.step()
    assert len(scripted.submits) == 1
    [stored] = await store.pending_transactions(chain_id_of(CHANNEL))
    assert stored.tx_hash.hex() == scripted.submits[0]
    assert await state_of(store, order.ref) is State.SUBMITTED

    second = FabricSubmitter(scripted, store)
    await second.recover()
    assert second.stats.recovered == 1
    assert len(scripted.submits) == 1, "the stored transaction was not sent again"
    assert await store.pending_transactions(chain_id_of(CHANNEL)) == []
    assert await second.step() == 0

    await follow_until_state(order, store, State.COMPLETED)
    assert (await onchain(scripted, order.ref))["state"] == 2


async def test_restart_before_submit_sends_the_stored_envelope(
    scripted: ScriptedGateway, store: WorkOrderStore
) -> None:
    """A crash between storing and Submit: recovery submits the same transaction id once."""
    order = await ready_order(scripted, store)
    scripted.submits.clear()
    scripted.crash_in_submit = True
    with pytest.raises(Crash):
        await FabricSubmitter(scripted, store).step()
    [stored] = await store.pending_transactions(chain_id_of(CHANNEL))

    second = FabricSubmitter(scripted, store, recover_wait_s=0.5)
    await second.recover()
    assert scripted.submits == [stored.tx_hash.hex()]
    await follow_until_state(order, store, State.COMPLETED)


async def test_mvcc_conflict_is_endorsed_again_with_a_new_transaction(
    scripted: ScriptedGateway, store: WorkOrderStore
) -> None:
    """A completion that loses an MVCC race is re-endorsed under a new tx id and commits."""
    order = await ready_order(scripted, store)
    scripted.submits.clear()

    async def race() -> None:
        # Another relayer completes the same order first, in a block of its own.
        other = FabricGateway(scripted.address, scripted.identity, CHANNEL, CHAINCODE)
        try:
            prepared = await other.endorse(other.propose(
                "workOrderComplete", order.ref.order_key.hex(), "0",
                RESPONSE.decode(), order.signature.hex(),
            ))
            await other.submit(prepared.tx_id, prepared.envelope)
            await other.commit_status(prepared.tx_id, timeout=30)
        finally:
            await other.close()

    scripted.before_submit = race
    submitter = FabricSubmitter(scripted, store)
    assert await submitter.step() == 1
    assert submitter.stats.conflicts == 1
    assert submitter.stats.committed == 1
    assert len(scripted.submits) == 2 and scripted.submits[0] != scripted.submits[1]
    stored = await store.get_transaction(chain_id_of(CHANNEL), submitter.sender, 1)
    assert stored is not None and stored.state == "mined"
    await follow_until_state(order, store, State.COMPLETED)


async def follow_until_state(order: ReadyOrder, store: WorkOrderStore, state: State) -> None:
    """Run the order's watcher until the store shows ``state`` for it."""
    current: list[State] = []

    async def check() -> None:
        while True:
            current.append(await state_of(store, order.ref))
            if current[-1] is state:
                return
            await asyncio.sleep(0.05)

    task = asyncio.create_task(order.watcher.run())
    try:
        await asyncio.wait_for(check(), timeout=15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
