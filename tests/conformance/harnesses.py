"""One harness per chain for the watcher conformance suite.

Each harness runs a real node (anvil, or the Fabric development peer with
its test-only event hook), submits work orders as a requester would,
produces one malformed registry event, completes orders with a valid
worker signature, and builds watchers over a given store. The sinks are
the production store sinks, wrapped to count the orders they are handed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eth_utils import keccak

from connector.ethereum import events as eth_events
from connector.ethereum.adapters import StoreWatcherSink
from connector.ethereum.transactions import Completion, encode_complete
from connector.ethereum.watcher import LogWatcher, WatchBatch
from connector.fabric import events as fab_events
from connector.fabric.adapters import FabricStoreSink, chain_id_of
from connector.fabric.gateway import FabricGateway
from connector.fabric.watcher import FabricBatch, FabricCheckpoint, FabricWatcher
from connector.requester_client import EthereumRequester, Submitted, encode_request
from connector.store import WorkOrderStore
from enclave_bridge.identity import load_sealed, unseal
from enclave_bridge.result_signature import (
    EthereumDomain,
    FabricDomain,
    sign_eip712,
    sign_fabric,
)
from tests.fabric_connector.peer import (
    CHAINCODE,
    CHANNEL,
    WorkerKey,
    emit_raw,
    gateway_for,
    invoke,
    register_worker,
    start_hooked_peer,
    submit_order,
    wait_until,
)

RESPONSE = b'{"jsonrpc":"2.0","id":1,"result":{}}'


@dataclass
class Seen:
    """Order keys (hex) the sink was handed, across every watcher of one test."""

    keys: list[str] = field(default_factory=list)


class Watcher(Protocol):
    async def catch_up(self) -> None:
        """Process everything the node holds now."""


class Harness(Protocol):
    chain_id: str | int
    contract: str
    seen: Seen

    async def submit_orders(self, count: int) -> list[str]: ...

    async def emit_malformed(self) -> None: ...

    async def complete(self, order_key: str) -> None: ...

    def watcher(self, store: WorkOrderStore) -> Watcher: ...


# -- Ethereum ------------------------------------------------------------------


# Runtime code that emits one LOG1 with the WorkOrderSubmitted topic and a
# single zero byte of data (which no ABI decoding accepts), then stops.
def _bad_log_code() -> bytes:
    topic = bytes.fromhex(eth_events.SUBMITTED_TOPIC[2:])
    return b"\x7f" + topic + bytes.fromhex("60016000a100")


class CountingEthereumSink(StoreWatcherSink):
    def __init__(self, seen: Seen, *args: Any) -> None:
        super().__init__(*args)
        self.seen = seen

    async def commit(self, batch: WatchBatch) -> None:
        await super().commit(batch)
        self.seen.keys += [
            e.order_key.hex() for e in batch.events
            if isinstance(e, eth_events.WorkOrderSubmitted)
        ]


@dataclass
class EthereumWatcher:
    watcher: LogWatcher

    async def catch_up(self) -> None:
        await self.watcher.poll()


class EthereumHarness:
    def __init__(self, env: Any) -> None:
        self.env = env
        self.rpc = env.rpc
        self.chain_id: str | int = env.config.ethereum.chain_id
        self.contract = env.deployment.contracts["WorkOrderRegistry"]
        self.seen = Seen()
        self.requester: EthereumRequester = env.requester(0)
        sealed = next(env.config.path(env.config.pool.identities_dir).glob("*.sealed"))
        self.worker_keys = unseal(load_sealed(sealed), "test passphrase")
        self.submitted: dict[str, Submitted] = {}

    async def submit_orders(self, count: int) -> list[str]:
        worker = await self.requester.worker(self.env.worker_ids[0])
        keys = []
        for n in range(count):
            sub = await self.requester.submit(worker, "echo-result", [f"order {n}"])
            await self.requester.receipt(sub.tx_hash)
            keys.append(sub.order_key.hex())
            self.submitted[keys[-1]] = sub
        return keys

    async def emit_malformed(self) -> None:
        # Swap the registry's code for a log emitter for one transaction:
        # a real log at the registry's address that does not decode.
        original = await self.rpc.call("eth_getCode", self.contract, "latest")
        await self.rpc.call("anvil_setCode", self.contract, "0x" + _bad_log_code().hex())
        try:
            tx = await self.requester.send(self.contract, b"", 100_000)
            await self.requester.receipt(tx.hash)
        finally:
            await self.rpc.call("anvil_setCode", self.contract, original)

    async def complete(self, order_key: str) -> None:
        sub = self.submitted[order_key]
        key = bytes.fromhex(order_key)
        signature = sign_eip712(
            self.worker_keys.signing_key,
            EthereumDomain(int(self.chain_id), self.contract),
            key, keccak(encode_request(sub.sent)), keccak(RESPONSE), 0,
        )
        data = encode_complete(Completion(key, 0, RESPONSE, signature))
        tx = await self.env.requester(1).send(self.contract, data, 400_000)
        await self.requester.receipt(tx.hash)

    def watcher(self, store: WorkOrderStore) -> Watcher:
        sink = CountingEthereumSink(
            self.seen, store, self.chain_id, self.contract, self.env.worker_ids
        )
        return EthereumWatcher(LogWatcher(
            self.rpc, self.contract, sink, confirmations=0,
            start_block=self.env.deployment.block,
        ))


@asynccontextmanager
async def ethereum_harness(folder: Path) -> AsyncIterator[EthereumHarness]:
    from connector.devnet import open_anvil
    from tests.support.bridge_env import open_bridge_env

    with open_anvil() as node:
        async with open_bridge_env(folder, node.url, with_consumer=False) as env:
            yield EthereumHarness(env)


# -- Fabric --------------------------------------------------------------------


class CountingFabricSink(FabricStoreSink):
    def __init__(self, seen: Seen, *args: Any) -> None:
        super().__init__(*args)
        self.seen = seen

    async def commit(self, batch: FabricBatch) -> None:
        await super().commit(batch)
        self.seen.keys += [
            e.order_key for e in batch.events if isinstance(e, fab_events.OrderSubmitted)
        ]


class FabricHarnessWatcher:
    def __init__(self, harness: FabricHarness, watcher: FabricWatcher) -> None:
        self.harness = harness
        self.watcher = watcher

    async def catch_up(self) -> None:
        last = self.harness.last
        task = asyncio.create_task(self.watcher.run())
        try:
            await wait_until(lambda: task.done() or self.watcher.checkpoint == last)
            if task.done():
                task.result()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class FabricHarness:
    def __init__(self, gateway: FabricGateway, worker_id: str, worker: WorkerKey,
                 start: int) -> None:
        self.gateway = gateway
        self.worker_id = worker_id
        self.worker = worker
        self.start = start
        self.chain_id: str | int = chain_id_of(CHANNEL)
        self.contract = CHAINCODE
        self.seen = Seen()
        self.orders: dict[str, tuple[str, str]] = {}
        # The newest event's (block, tx id): where catching up ends.
        self.last = FabricCheckpoint(start - 1)

    async def submit_orders(self, count: int) -> list[str]:
        keys = []
        for n in range(count):
            work_order_id, request = os.urandom(32).hex(), f'{{"order":{n}}}'
            key, tx_id, block = await submit_order(
                self.gateway, work_order_id, self.worker_id, request
            )
            self.last = FabricCheckpoint(block, tx_id)
            self.orders[key] = (work_order_id, request)
            keys.append(key)
        return keys

    async def emit_malformed(self) -> None:
        tx_id, block = await emit_raw(self.gateway, fab_events.SUBMITTED, b"\xff\xfe")
        self.last = FabricCheckpoint(block, tx_id)

    async def complete(self, order_key: str) -> None:
        work_order_id, request = self.orders[order_key]
        signature = sign_fabric(
            self.worker.private, FabricDomain(CHANNEL, CHAINCODE), work_order_id,
            hashlib.sha256(request.encode()).digest(), hashlib.sha256(RESPONSE).digest(),
            0,
        )
        tx_id, code, block = await invoke(
            self.gateway, "workOrderComplete", order_key, "0", RESPONSE.decode(),
            signature.hex(),
        )
        assert code == 0
        self.last = FabricCheckpoint(block, tx_id)

    def watcher(self, store: WorkOrderStore) -> Watcher:
        sink = CountingFabricSink(self.seen, store, CHANNEL, CHAINCODE, [self.worker_id])
        return FabricHarnessWatcher(self, FabricWatcher(
            self.gateway.chaincode_events, sink, start_block=self.start
        ))


@asynccontextmanager
async def fabric_harness(folder: Path) -> AsyncIterator[FabricHarness]:
    peer = start_hooked_peer(folder / "peer")
    try:
        async with gateway_for(peer) as gateway:
            worker, worker_id = WorkerKey(), os.urandom(32).hex()
            start = await register_worker(gateway, worker_id, worker.pem) + 1
            yield FabricHarness(gateway, worker_id, worker, start)
    finally:
        peer.stop()
