"""Small builders of store inputs for the tests."""

from __future__ import annotations

import hashlib

from connector.store import BadLog, NewOrder, OrderRef

CHAIN = 31337
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def key(n: int) -> bytes:
    return hashlib.sha256(b"order %d" % n).digest()


def ref(n: int) -> OrderRef:
    return OrderRef.of(CHAIN, REGISTRY, key(n))


def order(
    n: int,
    *,
    block: int = 10,
    request: bytes | None = None,
    skipped: bool = False,
    callback_gas: int = 0,
) -> NewOrder:
    body = request if request is not None else b'{"workOrderId": "%d"}' % n
    return NewOrder(
        order_key=key(n),
        work_order_id=f"{n:064x}",
        worker_id="ab" * 32,
        requester_id="cd" * 32,
        request=body,
        request_keccak=hashlib.sha3_256(body).digest(),
        block_number=block,
        block_hash=hashlib.sha256(b"block %d" % block).digest(),
        tx_hash="0x" + hashlib.sha256(b"tx %d" % n).hexdigest(),
        log_index=n,
        requester_address="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        skipped=skipped,
        callback_gas=callback_gas,
    )


def bad_log(n: int, *, block: int = 10) -> BadLog:
    return BadLog(
        block_number=block,
        block_hash=hashlib.sha256(b"block %d" % block).digest(),
        tx_hash=hashlib.sha256(b"bad tx %d" % n).digest(),
        log_index=n,
        data=b"\x00\x01not-abi",
        error="data shorter than the event's head",
    )


def block_hash(n: int, fork: str = "") -> bytes:
    return hashlib.sha256(f"block {n}{fork}".encode()).digest()
