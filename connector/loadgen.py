"""Load generation for benchmarks and the chaos test: many requesters, precomputed orders.

Work orders and their signed ``workOrderSubmit`` transactions are built
before any clock starts, so sending costs one JSON-RPC batch per chunk.
Completions are followed with plain ``eth_getLogs`` at a confirmation depth.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from connector.ethereum import events as ev
from connector.ethereum.rpc import JsonRpcClient
from connector.ethereum.transactions import TxSigner, encode_submit
from connector.requester_client import encode_request, requester_id_of
from enclave_bridge.requester import WorkerDetails, build_work_order
from enclave_bridge.result_signature import address_of_private_key, order_key

SEND_CHUNK = 100


@dataclass
class Order:
    key: bytes
    raw: bytes
    sent_at: float = 0.0
    done_at: float = 0.0


@dataclass
class Followed:
    """Completion logs seen per order key, and the transactions that carried them."""

    counts: dict[bytes, int] = field(default_factory=dict)
    tx_hashes: set[str] = field(default_factory=set)


def new_requesters(count: int) -> list[bytes]:
    return [secrets.token_bytes(32) for _ in range(count)]


async def fund(rpc: JsonRpcClient, keys: list[bytes], wei: int = 10**22) -> None:
    """Give each key a balance (anvil only)."""
    for key in keys:
        await rpc.call("anvil_setBalance", address_of_private_key(key), hex(wei))


async def prepare(
    rpc: JsonRpcClient, registry: str, worker: WorkerDetails, keys: list[bytes], count: int,
    payload: bytes, *, workload: str = "echo-result", chain_id: int = 31337,
) -> list[Order]:
    block = await rpc.call("eth_getBlockByNumber", "latest", False)
    base = int(block["baseFeePerGas"], 16)
    signers = [TxSigner(k, chain_id) for k in keys]
    nonces = [
        int(await rpc.call("eth_getTransactionCount", s.address, "pending"), 16) for s in signers
    ]
    orders = []
    for n in range(count):
        i = n % len(signers)
        signer = signers[i]
        sent = build_work_order(
            worker, workload, [payload], requester_key=keys[i],
            requester_id=requester_id_of(signer.address),
        )
        wo_id = bytes.fromhex(sent.params["workOrderId"])
        data = encode_submit(wo_id, bytes.fromhex(worker.worker_id),
                             bytes.fromhex(requester_id_of(signer.address)), encode_request(sent))
        tx = signer.sign(nonce=nonces[i], to=registry, data=data, gas=400_000,
                         max_fee=4 * base + 10**9, max_priority_fee=10**9)
        nonces[i] += 1
        orders.append(Order(order_key(signer.address, wo_id), tx.raw))
    return orders


async def send(rpc: JsonRpcClient, orders: list[Order], rate: float = 0.0) -> None:
    """Send in chunks, at most ``rate`` orders a second (0: as fast as possible)."""
    start = time.monotonic()
    for first in range(0, len(orders), SEND_CHUNK):
        chunk = orders[first : first + SEND_CHUNK]
        if rate:
            await asyncio.sleep(max(0.0, start + first / rate - time.monotonic()))
        now = time.monotonic()
        for o in chunk:
            o.sent_at = now
        replies = await rpc.batch([("eth_sendRawTransaction", ["0x" + o.raw.hex()]) for o in chunk])
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            raise RuntimeError(f"submit refused: {errors[0]}")


async def follow(
    rpc: JsonRpcClient, registry: str, orders: dict[bytes, Order], *, confirmations: int,
    from_block: int, timeout: float, topic: str = ev.COMPLETED_TOPIC,
) -> Followed:
    """Watch logs of ``topic`` until every order has one at the confirmed depth."""
    out = Followed()
    cursor = from_block
    deadline = time.monotonic() + timeout
    while len(out.counts) < len(orders) and time.monotonic() < deadline:
        top = int(await rpc.call("eth_blockNumber"), 16) - confirmations
        if top >= cursor:
            logs = await rpc.call("eth_getLogs", {"address": registry, "topics": [topic],
                                                 "fromBlock": hex(cursor), "toBlock": hex(top)})
            now = time.monotonic()
            for raw in logs:
                key = _order_key_of(raw, topic)
                if key in orders:
                    out.counts[key] = out.counts.get(key, 0) + 1
                    out.tx_hashes.add(raw["transactionHash"])
                    if orders[key].done_at == 0.0:
                        orders[key].done_at = now
            cursor = top + 1
        await asyncio.sleep(0.05)
    return out


def _order_key_of(raw: dict[str, object], topic: str) -> bytes:
    event = ev.decode_log(raw)
    if isinstance(event, (ev.WorkOrderCompleted, ev.WorkOrderSubmitted)):
        return event.order_key
    return b""
