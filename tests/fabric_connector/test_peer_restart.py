"""The watcher follows a development peer that goes away and comes back."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from connector.fabric.adapters import FabricStoreSink
from connector.fabric.gateway import FabricGateway
from connector.fabric.watcher import FabricWatcher
from connector.states import State
from connector.store import WorkOrderStore
from enclave_bridge.errors import NodeUnavailable
from tcbridge_devpeer.chaincode import free_port
from tests.fabric_connector.peer import (
    CHAINCODE,
    CHANNEL,
    WorkerKey,
    gateway_for,
    register_worker,
    start_hooked_peer,
    submit_order,
    wait_until,
)


async def submit_retrying(gateway: FabricGateway, worker_id: str) -> None:
    """Submit an order, retrying while gRPC's connection to the new peer comes up."""
    for _ in range(40):
        try:
            await submit_order(gateway, os.urandom(32).hex(), worker_id)
            return
        except NodeUnavailable:
            await asyncio.sleep(0.25)
    raise AssertionError("the restarted peer never accepted a submit")


async def test_watcher_reconnects_after_the_peer_restarts_and_loses_nothing(
    tmp_path: Path, store: WorkOrderStore
) -> None:
    """Orders before, and after, a peer restart are each recorded once."""
    folder, port = tmp_path / "peer", free_port()
    peer = start_hooked_peer(folder, port)
    try:
        gateway = gateway_for(peer)
        worker_id = os.urandom(32).hex()
        start = await register_worker(gateway, worker_id, WorkerKey().pem) + 1
        sink = FabricStoreSink(store, CHANNEL, CHAINCODE, [worker_id])
        watcher = FabricWatcher(gateway.chaincode_events, sink, start_block=start)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.watch(stop))

        await submit_order(gateway, os.urandom(32).hex(), worker_id)
        await wait_until(lambda: watcher.recorded == 1)
        await asyncio.to_thread(peer.stop)
        await wait_until(lambda: watcher.reconnects >= 1)

        peer = await asyncio.to_thread(start_hooked_peer, folder, port)
        async with gateway_for(peer) as requester:
            for _ in range(2):
                await submit_retrying(requester, worker_id)
        await wait_until(lambda: watcher.recorded == 3, timeout=30)
        stop.set()
        await task
        await gateway.close()
    finally:
        peer.stop()

    counts = await store.counts_by_state()
    assert {s: n for s, n in counts.items() if n} == {State.RECEIVED: 3}
