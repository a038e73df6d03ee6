"""Registry calldata and locally signed EIP-1559 transactions.

Signing with coincurve and rlp directly costs about 90 µs a transaction
here, against about 470 µs through eth_account's ``sign_transaction``; the
bytes are identical (checked in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import coincurve
import rlp
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_canonical_address
from eth_utils.crypto import keccak

from enclave_bridge.result_signature import address_of_private_key


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


SUBMIT = selector("workOrderSubmit(bytes32,bytes32,bytes32,bytes,uint64,uint32)")
COMPLETE = selector("workOrderComplete(bytes32,uint256,bytes,bytes)")
COMPLETE_BATCH = selector("workOrderCompleteBatch((bytes32,uint256,bytes,bytes)[])")
GET = selector("workOrderGet(bytes32)")
WORKER_SIGNER = selector("workerSigner(bytes32)")

GET_TYPES = [
    "uint8",
    "bytes32",
    "address",
    "address",
    "bytes32",
    "bytes32",
    "uint256",
    "uint64",
    "uint64",
    "uint64",
]

# workOrderGet's state values.
ORDER_NONE, ORDER_PENDING, ORDER_COMPLETED, ORDER_CANCELLED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Completion:
    """One item of a completion: what the worker signed and its signature."""

    order_key: bytes
    status: int
    response: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class OrderView:
    """``workOrderGet``'s answer."""

    state: int
    worker_id: bytes
    signer: str
    requester: str
    request_hash: bytes
    response_hash: bytes
    status: int
    submitted_at: int
    completed_at: int
    deadline: int


def encode_submit(
    work_order_id: bytes,
    worker_id: bytes,
    requester_id: bytes,
    request: bytes,
    deadline: int = 0,
    callback_gas: int = 0,
) -> bytes:
    return SUBMIT + abi_encode(
        ["bytes32", "bytes32", "bytes32", "bytes", "uint64", "uint32"],
        [work_order_id, worker_id, requester_id, request, deadline, callback_gas],
    )


def encode_complete(item: Completion) -> bytes:
    return COMPLETE + abi_encode(
        ["bytes32", "uint256", "bytes", "bytes"],
        [item.order_key, item.status, item.response, item.signature],
    )


def encode_complete_batch(items: Sequence[Completion]) -> bytes:
    rows = [(i.order_key, i.status, i.response, i.signature) for i in items]
    return COMPLETE_BATCH + abi_encode(["(bytes32,uint256,bytes,bytes)[]"], [rows])


def encode_completion_call(items: Sequence[Completion]) -> bytes:
    """A single completion is cheaper as ``workOrderComplete`` than as a batch of one."""
    if len(items) == 1:
        return encode_complete(items[0])
    return encode_complete_batch(items)


def encode_get(order_key: bytes) -> bytes:
    return GET + abi_encode(["bytes32"], [order_key])


def decode_get(result: bytes) -> OrderView:
    values = abi_decode(GET_TYPES, result)
    return OrderView(*values)


@dataclass(frozen=True, slots=True)
class SignedTx:
    raw: bytes
    hash: str
    nonce: int
    max_fee: int
    max_priority_fee: int


class TxSigner:
    """Signs type-2 (EIP-1559) transactions with one local key.

    ``repr`` never shows the key.
    """

    def __init__(self, private_key: bytes, chain_id: int) -> None:
        self._key = coincurve.PrivateKey(private_key)
        self.chain_id = chain_id
        self.address = address_of_private_key(private_key)

    def __repr__(self) -> str:
        return f"TxSigner(address={self.address}, chain_id={self.chain_id})"

    def sign(
        self,
        *,
        nonce: int,
        to: str,
        data: bytes,
        gas: int,
        max_fee: int,
        max_priority_fee: int,
        value: int = 0,
    ) -> SignedTx:
        fields = [
            self.chain_id,
            nonce,
            max_priority_fee,
            max_fee,
            gas,
            to_canonical_address(to),
            value,
            data,
            [],
        ]
        payload = b"\x02" + rlp.encode(fields)
        sig = self._key.sign_recoverable(keccak(payload), hasher=None)
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:64], "big")
        raw = b"\x02" + rlp.encode([*fields, sig[64], r, s])
        return SignedTx(raw, "0x" + keccak(raw).hex(), nonce, max_fee, max_priority_fee)
