"""A requester on Ethereum: build a work order, submit it, wait, verify, decrypt.

This is what a dApp does, and what ``tcbridge submit``, the demo, the
end-to-end tests and the benchmark use. It speaks raw JSON-RPC like the
bridge. A requester id is the requester's address left-padded to 32 bytes
(the convention ExampleConsumer follows too), so the registry's indexed
ids and the JSON's can be compared.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_canonical_address
from eth_utils.crypto import keccak

from connector.ethereum import events as ev
from connector.ethereum.rpc import JsonRpcClient, RpcError
from connector.ethereum.transactions import (
    ORDER_COMPLETED,
    SignedTx,
    TxSigner,
    decode_get,
    encode_get,
    encode_submit,
    selector,
)
from enclave_bridge.errors import ChainError, TransactionFailed
from enclave_bridge.requester import (
    Output,
    ResponseVerdict,
    SentWorkOrder,
    WorkerDetails,
    build_work_order,
    verify_response,
)
from enclave_bridge.result_signature import order_key as make_order_key

WORKER_RETRIEVE = selector("workerRetrieve(bytes32)")
UNKNOWN_WORKER = selector("UnknownWorker(bytes32)")
REQUEST_COMPUTATION = selector(
    "requestComputation(bytes32,bytes32,bytes,uint64,uint32)"
)
RESULT_OF = selector("resultOf(bytes32)")
GWEI = 10**9


def requester_id_of(address: str) -> str:
    return (b"\x00" * 12 + to_canonical_address(address)).hex()


def encode_request(sent: SentWorkOrder) -> bytes:
    return json.dumps(sent.request, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Submitted:
    order_key: bytes
    sent: SentWorkOrder
    worker: WorkerDetails
    tx_hash: str
    submitted_at: float
    via_consumer: str | None = None
    raw: bytes = b""


@dataclass(frozen=True)
class Completion:
    order_key: bytes
    status: int
    response: bytes
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class Checked:
    """A completion checked as a requester would."""

    verdict: ResponseVerdict
    status: int
    onchain_hash_ok: bool

    @property
    def ok(self) -> bool:
        return self.verdict.accepted and self.onchain_hash_ok and self.status == 0

    @property
    def outputs(self) -> tuple[Output, ...]:
        return self.verdict.outputs


class EthereumRequester:
    def __init__(
        self,
        rpc: JsonRpcClient,
        key: bytes,
        chain_id: int,
        work_order_registry: str,
        worker_registry: str,
    ) -> None:
        self.rpc = rpc
        self.key = key
        self.signer = TxSigner(key, chain_id)
        self.address = self.signer.address
        self.registry = work_order_registry
        self.worker_registry = worker_registry
        self._nonce: int | None = None
        self._lock = asyncio.Lock()

    async def worker(self, worker_id: str) -> WorkerDetails:
        """The worker's EEA details as registered on-chain."""
        data = WORKER_RETRIEVE + abi_encode(["bytes32"], [bytes.fromhex(worker_id)])
        try:
            raw = await self.rpc.call(
                "eth_call",
                {"to": self.worker_registry, "data": "0x" + data.hex()},
                "latest",
            )
        except RpcError as exc:
            if UNKNOWN_WORKER.hex() in f"{exc.data} {exc.rpc_message}":
                raise ChainError(
                    f"worker {worker_id} is not registered in the worker registry"
                ) from exc
            raise
        values = abi_decode(
            [
                "uint256",
                "uint256",
                "bytes32",
                "bytes32[]",
                "string",
                "address",
                "address",
            ],
            bytes.fromhex(raw[2:]),
        )
        if values[0] == 0:
            raise ChainError(f"worker {worker_id} is not registered")
        return WorkerDetails.from_json(
            {"details": json.loads(values[4])}, worker_id=worker_id
        )

    def build(
        self,
        worker: WorkerDetails,
        workload: str,
        inputs: Sequence[bytes | str],
        *,
        requester_id: str | None = None,
    ) -> SentWorkOrder:
        return build_work_order(
            worker,
            workload,
            list(inputs),
            requester_key=self.key,
            requester_id=requester_id or requester_id_of(self.address),
        )

    async def send(self, to: str, data: bytes, gas: int) -> SignedTx:
        async with self._lock:
            if self._nonce is None:
                self._nonce = int(
                    await self.rpc.call(
                        "eth_getTransactionCount", self.address, "pending"
                    ),
                    16,
                )
            nonce = self._nonce
            self._nonce += 1
        block = await self.rpc.call("eth_getBlockByNumber", "latest", False)
        base = int(block.get("baseFeePerGas", "0x0"), 16)
        tx = self.signer.sign(
            nonce=nonce,
            to=to,
            data=data,
            gas=gas,
            max_fee=2 * base + GWEI,
            max_priority_fee=GWEI,
        )
        await self.rpc.call("eth_sendRawTransaction", "0x" + tx.raw.hex())
        return tx

    async def submit(
        self,
        worker: WorkerDetails,
        workload: str,
        inputs: Sequence[bytes | str],
        *,
        deadline: int = 0,
        callback_gas: int = 0,
        gas: int | None = None,
    ) -> Submitted:
        sent = self.build(worker, workload, inputs)
        return await self.submit_built(
            sent, worker, deadline=deadline, callback_gas=callback_gas, gas=gas
        )

    async def submit_built(
        self,
        sent: SentWorkOrder,
        worker: WorkerDetails,
        *,
        deadline: int = 0,
        callback_gas: int = 0,
        gas: int | None = None,
    ) -> Submitted:
        params = sent.params
        request = encode_request(sent)
        data = encode_submit(
            bytes.fromhex(params["workOrderId"]),
            bytes.fromhex(worker.worker_id),
            bytes.fromhex(params["requesterId"]),
            request,
            deadline,
            callback_gas,
        )
        tx = await self.send(self.registry, data, gas or 150_000 + 40 * len(request))
        key = make_order_key(self.address, bytes.fromhex(params["workOrderId"]))
        return Submitted(key, sent, worker, tx.hash, time.monotonic(), raw=tx.raw)

    async def submit_via_consumer(
        self,
        consumer: str,
        worker: WorkerDetails,
        workload: str,
        inputs: Sequence[bytes | str],
        *,
        callback_gas: int = 1_500_000,
    ) -> Submitted:
        """Ask ExampleConsumer (owned by this requester) to request the computation."""
        sent = self.build(
            worker, workload, inputs, requester_id=requester_id_of(consumer)
        )
        params = sent.params
        request = encode_request(sent)
        data = REQUEST_COMPUTATION + abi_encode(
            ["bytes32", "bytes32", "bytes", "uint64", "uint32"],
            [
                bytes.fromhex(params["workOrderId"]),
                bytes.fromhex(worker.worker_id),
                request,
                0,
                callback_gas,
            ],
        )
        tx = await self.send(consumer, data, 250_000 + 40 * len(request))
        key = make_order_key(consumer, bytes.fromhex(params["workOrderId"]))
        return Submitted(
            key, sent, worker, tx.hash, time.monotonic(), via_consumer=consumer
        )

    async def receipt(self, tx_hash: str, timeout: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            receipt = await self.rpc.call("eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                if receipt.get("status") != "0x1":
                    raise TransactionFailed(f"transaction {tx_hash} reverted")
                return dict(receipt)
            await asyncio.sleep(0.1)
        raise ChainError(f"transaction {tx_hash} was not mined within {timeout} s")

    async def completions(
        self, from_block: int, to_block: int | str = "latest"
    ) -> list[Completion]:
        logs = await self.rpc.call(
            "eth_getLogs",
            {
                "address": self.registry,
                "topics": [ev.COMPLETED_TOPIC],
                "fromBlock": hex(from_block),
                "toBlock": to_block if isinstance(to_block, str) else hex(to_block),
            },
        )
        out = []
        for raw in logs:
            event = ev.decode_log(raw)
            if isinstance(event, ev.WorkOrderCompleted):
                out.append(
                    Completion(
                        event.order_key,
                        event.status,
                        event.response,
                        event.ref.block_number,
                        event.ref.tx_hash,
                    )
                )
        return out

    async def wait_completion(
        self, order_key: bytes, timeout: float = 120.0, from_block: int = 0
    ) -> Completion:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = await self.rpc.call(
                "eth_getLogs",
                {
                    "address": self.registry,
                    "topics": [ev.COMPLETED_TOPIC, "0x" + order_key.hex()],
                    "fromBlock": hex(from_block),
                    "toBlock": "latest",
                },
            )
            for raw in logs:
                event = ev.decode_log(raw)
                if isinstance(event, ev.WorkOrderCompleted):
                    return Completion(
                        event.order_key,
                        event.status,
                        event.response,
                        event.ref.block_number,
                        event.ref.tx_hash,
                    )
            await asyncio.sleep(0.2)
        raise ChainError(
            f"work order {order_key.hex()} was not completed within {timeout} s"
        )

    async def check(self, submitted: Submitted, completion: Completion) -> Checked:
        """Verify a completion: the contract's stored hash, the EEA signature, the outputs."""
        data = encode_get(submitted.order_key)
        raw = await self.rpc.call(
            "eth_call", {"to": self.registry, "data": "0x" + data.hex()}, "latest"
        )
        view = decode_get(bytes.fromhex(raw[2:]))
        hash_ok = view.state == ORDER_COMPLETED and view.response_hash == keccak(
            completion.response
        )
        try:
            response = json.loads(completion.response)
        except ValueError:
            return Checked(
                ResponseVerdict(False, "response is not JSON"),
                completion.status,
                hash_ok,
            )
        verdict = verify_response(submitted.sent, response, submitted.worker)
        return Checked(verdict, completion.status, hash_ok)

    async def consumer_result(
        self, consumer: str, order_key: bytes
    ) -> tuple[bool, int, bytes]:
        data = RESULT_OF + abi_encode(["bytes32"], [order_key])
        raw = await self.rpc.call(
            "eth_call", {"to": consumer, "data": "0x" + data.hex()}, "latest"
        )
        received, status, response = abi_decode(
            ["bool", "uint256", "bytes"], bytes.fromhex(raw[2:])
        )
        return bool(received), int(status), bytes(response)
