"""Decoding the registry's and the oracle's logs straight from JSON-RPC, without web3.py.

Slicing the ABI layout by hand costs a few microseconds per log (web3.py's
event decoding costs about 270 µs). Every decoder is strict: a log whose
topics or data do not fit the event's ABI exactly is reported as a
:class:`MalformedLog` naming its block, transaction and log index, never
raised, so one bad log cannot stall the watcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

SUBMITTED_SIG = (
    "WorkOrderSubmitted(bytes32,bytes32,bytes32,bytes32,address,uint32,bytes)"
)
COMPLETED_SIG = "WorkOrderCompleted(bytes32,bytes32,bytes32,uint256,bytes)"
SKIPPED_SIG = "CompletionSkipped(bytes32,uint8)"
CANCELLED_SIG = "WorkOrderCancelled(bytes32,bytes32)"

SUBMITTED_TOPIC = "0x" + keccak(text=SUBMITTED_SIG).hex()
COMPLETED_TOPIC = "0x" + keccak(text=COMPLETED_SIG).hex()
SKIPPED_TOPIC = "0x" + keccak(text=SKIPPED_SIG).hex()
CANCELLED_TOPIC = "0x" + keccak(text=CANCELLED_SIG).hex()

ALL_TOPICS = [SUBMITTED_TOPIC, COMPLETED_TOPIC, SKIPPED_TOPIC, CANCELLED_TOPIC]

# TrustedOracle (oracle-contract mode); decoded by decode_oracle_log.
ORACLE_REQUESTED_SIG = (
    "OracleRequested(bytes32,bytes32,address,bytes32,uint64,uint32,bytes)"
)
ORACLE_FULFILLED_SIG = "OracleFulfilled(bytes32,uint256,bytes)"
ORACLE_CANCELLED_SIG = "OracleCancelled(bytes32)"

ORACLE_REQUESTED_TOPIC = "0x" + keccak(text=ORACLE_REQUESTED_SIG).hex()
ORACLE_FULFILLED_TOPIC = "0x" + keccak(text=ORACLE_FULFILLED_SIG).hex()
ORACLE_CANCELLED_TOPIC = "0x" + keccak(text=ORACLE_CANCELLED_SIG).hex()

ORACLE_TOPICS = [ORACLE_REQUESTED_TOPIC, ORACLE_FULFILLED_TOPIC, ORACLE_CANCELLED_TOPIC]


@dataclass(frozen=True, slots=True)
class LogRef:
    """Where a log sits on the chain."""

    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int

    def __str__(self) -> str:
        return f"block {self.block_number} tx {self.tx_hash} log {self.log_index}"


@dataclass(frozen=True, slots=True)
class WorkOrderSubmitted:
    ref: LogRef
    order_key: bytes
    work_order_id: bytes
    worker_id: bytes
    requester_id: bytes
    requester: str
    callback_gas: int
    request: bytes


@dataclass(frozen=True, slots=True)
class WorkOrderCompleted:
    ref: LogRef
    order_key: bytes
    work_order_id: bytes
    worker_id: bytes
    status: int
    response: bytes


@dataclass(frozen=True, slots=True)
class CompletionSkipped:
    ref: LogRef
    order_key: bytes
    reason: int


@dataclass(frozen=True, slots=True)
class WorkOrderCancelled:
    ref: LogRef
    order_key: bytes
    work_order_id: bytes


@dataclass(frozen=True, slots=True)
class OracleRequested:
    ref: LogRef
    request_id: bytes
    worker_id: bytes
    requester: str
    workload: bytes
    expiry: int
    callback_gas: int
    params: bytes


@dataclass(frozen=True, slots=True)
class OracleFulfilled:
    ref: LogRef
    request_id: bytes
    status: int
    result: bytes


@dataclass(frozen=True, slots=True)
class OracleCancelled:
    ref: LogRef
    request_id: bytes


@dataclass(frozen=True, slots=True)
class MalformedLog:
    ref: LogRef
    topic0: str | None
    reason: str
    data: bytes

    def __str__(self) -> str:
        return f"malformed log at {self.ref}: {self.reason}"


RegistryEvent = (
    WorkOrderSubmitted
    | WorkOrderCompleted
    | CompletionSkipped
    | WorkOrderCancelled
    | MalformedLog
)


OracleEvent = OracleRequested | OracleFulfilled | OracleCancelled | MalformedLog
# Whatever a watcher of one of our contracts may hand its sink.
AnyEvent = RegistryEvent | OracleEvent


class _Bad(ValueError):
    pass


def log_ref(log: dict[str, Any]) -> LogRef:
    """The position of a raw JSON-RPC log (these fields are the node's, not the emitter's)."""
    return LogRef(
        block_number=int(log["blockNumber"], 16),
        block_hash=log["blockHash"],
        tx_hash=log["transactionHash"],
        log_index=int(log["logIndex"], 16),
    )


def decode_log(log: dict[str, Any]) -> RegistryEvent:
    """Decode one raw log of the work-order registry; never raises on bad data."""
    ref = log_ref(log)
    topics = log.get("topics") or []
    topic0 = topics[0] if topics else None
    try:
        data = _hex_bytes(log.get("data", "0x"))
    except _Bad as exc:
        return MalformedLog(ref, topic0, f"data is not hex: {exc}", b"")
    try:
        words = [_word(t) for t in topics[1:]]
        if topic0 == SUBMITTED_TOPIC:
            return _submitted(ref, words, data)
        if topic0 == COMPLETED_TOPIC:
            return _completed(ref, words, data)
        if topic0 == SKIPPED_TOPIC:
            _expect_topics(words, 1)
            return CompletionSkipped(ref, words[0], _uint(data, 0, bits=8, total=32))
        if topic0 == CANCELLED_TOPIC:
            _expect_topics(words, 2)
            if data:
                raise _Bad(f"expected no data, got {len(data)} bytes")
            return WorkOrderCancelled(ref, words[0], words[1])
        raise _Bad(f"unknown event topic {topic0}")
    except _Bad as exc:
        return MalformedLog(ref, topic0, str(exc), data)


def decode_oracle_log(log: dict[str, Any]) -> OracleEvent:
    """Decode one raw log of a TrustedOracle; never raises on bad data."""
    ref = log_ref(log)
    topics = log.get("topics") or []
    topic0 = topics[0] if topics else None
    try:
        data = _hex_bytes(log.get("data", "0x"))
    except _Bad as exc:
        return MalformedLog(ref, topic0, f"data is not hex: {exc}", b"")
    try:
        words = [_word(t) for t in topics[1:]]
        if topic0 == ORACLE_REQUESTED_TOPIC:
            return _oracle_requested(ref, words, data)
        if topic0 == ORACLE_FULFILLED_TOPIC:
            _expect_topics(words, 1)
            status = _uint(data, 0, bits=256, total=None)
            result = _dynamic_bytes(data, 32, head_words=2)
            return OracleFulfilled(ref, words[0], status, result)
        if topic0 == ORACLE_CANCELLED_TOPIC:
            _expect_topics(words, 1)
            if data:
                raise _Bad(f"expected no data, got {len(data)} bytes")
            return OracleCancelled(ref, words[0])
        raise _Bad(f"unknown event topic {topic0}")
    except _Bad as exc:
        return MalformedLog(ref, topic0, str(exc), data)


def _oracle_requested(ref: LogRef, words: list[bytes], data: bytes) -> OracleRequested:
    _expect_topics(words, 3)
    requester = _address(words[2], 0)
    workload = _slice(data, 0, 32)
    expiry = _uint(data, 32, bits=64, total=None)
    callback_gas = _uint(data, 64, bits=32, total=None)
    params = _dynamic_bytes(data, 96, head_words=4)
    return OracleRequested(
        ref, words[0], words[1], requester, workload, expiry, callback_gas, params
    )


def _submitted(ref: LogRef, words: list[bytes], data: bytes) -> WorkOrderSubmitted:
    _expect_topics(words, 3)
    order_key = _slice(data, 0, 32)
    requester = _address(data, 32)
    callback_gas = _uint(data, 64, bits=32, total=None)
    request = _dynamic_bytes(data, 96, head_words=4)
    return WorkOrderSubmitted(
        ref, order_key, words[0], words[1], words[2], requester, callback_gas, request
    )


def _completed(ref: LogRef, words: list[bytes], data: bytes) -> WorkOrderCompleted:
    _expect_topics(words, 3)
    status = _uint(data, 0, bits=256, total=None)
    response = _dynamic_bytes(data, 32, head_words=2)
    return WorkOrderCompleted(ref, words[0], words[1], words[2], status, response)


def _expect_topics(words: list[bytes], n: int) -> None:
    if len(words) != n:
        raise _Bad(f"expected {n} indexed topics, got {len(words)}")


def _hex_bytes(text: Any) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise _Bad("missing 0x prefix")
    try:
        return bytes.fromhex(text[2:])
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _word(topic: Any) -> bytes:
    raw = _hex_bytes(topic)
    if len(raw) != 32:
        raise _Bad(f"topic of {len(raw)} bytes")
    return raw


def _slice(data: bytes, start: int, size: int) -> bytes:
    if len(data) < start + size:
        raise _Bad(f"data too short: {len(data)} bytes, need {start + size}")
    return data[start : start + size]


def _uint(data: bytes, start: int, *, bits: int, total: int | None) -> int:
    if total is not None and len(data) != total:
        raise _Bad(f"expected {total} bytes of data, got {len(data)}")
    value = int.from_bytes(_slice(data, start, 32), "big")
    if value >> bits:
        raise _Bad(f"value does not fit uint{bits}")
    return value


def _address(data: bytes, start: int) -> str:
    word = _slice(data, start, 32)
    if any(word[:12]):
        raise _Bad("address word has dirty high bytes")
    return to_checksum_address(word[12:])


def _dynamic_bytes(data: bytes, offset_at: int, *, head_words: int) -> bytes:
    """A ``bytes`` value as the last (only dynamic) field of a tuple."""
    offset = int.from_bytes(_slice(data, offset_at, 32), "big")
    if offset != head_words * 32:
        raise _Bad(f"bytes offset {offset}, expected {head_words * 32}")
    length = int.from_bytes(_slice(data, offset, 32), "big")
    start = offset + 32
    if length > len(data) - start:
        raise _Bad(f"bytes declares {length} bytes but {len(data) - start} follow")
    padded = (length + 31) // 32 * 32
    if len(data) != start + padded:
        raise _Bad(f"data has {len(data) - start - padded} trailing bytes")
    if any(data[start + length : start + padded]):
        raise _Bad("non-zero padding after bytes")
    return data[start : start + length]
