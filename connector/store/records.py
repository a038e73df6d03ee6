"""The plain values the store takes and returns (no SQLAlchemy objects leak out).

Identity: every work order is keyed by ``OrderRef`` = (chain id, contract,
order key). ``OrderRef.of`` normalises what callers hold (an int chain id, a
checksummed address) so that one order has exactly one key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from connector.states import State

HashLike = bytes | str


def chain_key(chain_id: int | str) -> str:
    """The text form of a chain id: ``31337`` and ``"31337"`` are one chain."""
    return str(chain_id)


def contract_key(contract: str) -> str:
    """Hex addresses in lower case; a chaincode name stays as it is."""
    return contract.lower() if contract.startswith(("0x", "0X")) else contract


def as_bytes(value: HashLike) -> bytes:
    """Hashes arrive as bytes or ``0x`` hex text; the store keeps bytes."""
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(value.removeprefix("0x").removeprefix("0X"))


def as_id(value: str | bytes) -> str:
    """EEA ids (work order, worker, requester) as hex text without ``0x``."""
    if isinstance(value, bytes):
        return value.hex()
    return value


@dataclass(frozen=True, slots=True)
class OrderRef:
    """The identity of one work order; build it with ``OrderRef.of``."""

    chain_id: str
    contract: str
    order_key: bytes

    @classmethod
    def of(cls, chain_id: int | str, contract: str, order_key: HashLike) -> OrderRef:
        return cls(chain_key(chain_id), contract_key(contract), as_bytes(order_key))


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A confirmed work-order event, as the watcher hands it to the store.

    ``skipped`` records an order whose worker belongs to another operator
    (state SKIPPED): kept so the checkpoint can pass it, never executed.
    """

    order_key: HashLike
    work_order_id: str | bytes
    worker_id: str | bytes
    requester_id: str | bytes
    request: bytes
    request_keccak: HashLike
    block_number: int
    block_hash: HashLike
    tx_hash: HashLike
    log_index: int
    requester_address: str | None = None
    deadline: int | None = None  # unix seconds
    callback_gas: int = 0
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class BadLog:
    """A log that did not decode into a work order (recorded as MALFORMED)."""

    block_number: int
    block_hash: HashLike
    tx_hash: HashLike
    log_index: int
    data: bytes
    error: str


@dataclass(frozen=True, slots=True)
class Settlement:
    """A confirmed on-chain outcome of an order, recorded with the checkpoint.

    ``completed``: a WorkOrderCompleted event; ``status`` 0 makes the order
    COMPLETED, any other EEA status FAILED. ``cancelled``: the requester
    cancelled it (CANCELLED). ``skipped``: a batch completion passed over it
    (CompletionSkipped ``reason``); the reason is noted on the order and its
    state is left alone, since the event that settles it, if any, follows.
    """

    order_key: HashLike
    kind: Literal["completed", "cancelled", "skipped"]
    block_number: int
    status: int = 0
    reason: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far one event stream has been read, and the hashes seen on the way."""

    block_number: int
    recent_hashes: Mapping[int, bytes] = field(default_factory=dict)
    last_tx_id: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record_events`` did with a batch."""

    new: list[OrderRef]
    # Orphaned orders seen again: back to RECEIVED (a result made is kept).
    revived: list[OrderRef]
    # Events already recorded: nothing changed.
    duplicates: int
    malformed: int
    # Settlements that changed an order (the rest were repeats or not ours).
    settled: int = 0


@dataclass(frozen=True, slots=True)
class ResultToSave:
    """A signed result for ``save_results``."""

    ref: OrderRef
    status: int
    response: bytes
    signature: bytes
    request_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredResult:
    """The signed result of one work order."""

    status: int  # EEA status code; 0 is success
    response: bytes
    signature: bytes
    request_hash: bytes  # the EEA request hash
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """A work order as the store holds it, with its result if one was made."""

    ref: OrderRef
    work_order_id: str
    worker_id: str
    requester_id: str
    requester_address: str | None
    request: bytes
    request_keccak: bytes
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int
    state: State
    attempts: int
    error_code: int | None
    error_message: str | None
    claimed_by: str | None
    claimed_at: datetime | None
    received_at: datetime
    updated_at: datetime
    deadline: int | None
    completion_block: int | None
    result: StoredResult | None
    callback_gas: int = 0


@dataclass(frozen=True, slots=True)
class ReadyCompletion:
    """An order in RESULT_READY as a submitter sends it: the result, no request."""

    ref: OrderRef
    status: int
    response: bytes
    signature: bytes
    requester_address: str | None
    callback_gas: int
    ready_since: datetime  # when the order entered RESULT_READY


@dataclass(frozen=True, slots=True)
class Released:
    """What ``release_claims`` did: requeued orders, and those out of retries."""

    requeued: list[OrderRef]
    # Claimed too often: still CLAIMED; the pool must sign an error result.
    exhausted: list[OrderRef]


@dataclass(frozen=True, slots=True)
class Fees:
    """Fee fields of a signed transaction, in wei (EIP-1559 or legacy)."""

    gas_limit: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    gas_price: int | None = None


@dataclass(frozen=True, slots=True)
class StoredTransaction:
    """One nonce of one sender and every signed version sent for it."""

    chain_id: str
    sender: str
    nonce: int
    raw: bytes
    tx_hash: bytes
    state: str
    fees: Fees
    all_hashes: list[bytes]
    orders: list[OrderRef]
    mined_hash: bytes | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredWorker:
    """A worker identity as the store keeps it; the private keys stay sealed."""

    worker_id: str
    sealed_identity: bytes
    details: Mapping[str, Any]  # the EEA worker details, JSON-compatible
    signing_address: str
