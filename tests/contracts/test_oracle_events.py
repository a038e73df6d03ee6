"""Strict decoding of TrustedOracle's raw logs (oracle-contract mode)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import encode as abi_encode

from connector.ethereum import events

POSITION = {
    "blockNumber": "0x10",
    "blockHash": "0x" + "11" * 32,
    "transactionHash": "0x" + "22" * 32,
    "logIndex": "0x3",
}
REQUEST_ID = b"\x07" * 32
WORKER_ID = b"\x08" * 32
CONSUMER = "0x" + "cd" * 20
WORKLOAD = b"json-extract".ljust(32, b"\0")


def _topic(raw: bytes) -> str:
    return "0x" + raw.hex()


def requested_log(params: bytes = b'{"inputs":["x"]}') -> dict[str, Any]:
    data = abi_encode(
        ["bytes32", "uint64", "uint32", "bytes"], [WORKLOAD, 1234, 300_000, params]
    )
    topics = [
        events.ORACLE_REQUESTED_TOPIC,
        _topic(REQUEST_ID),
        _topic(WORKER_ID),
        _topic(bytes(12) + bytes.fromhex(CONSUMER[2:])),
    ]
    return {"topics": topics, "data": "0x" + data.hex()} | POSITION


def fulfilled_log(status: int = 0, result: bytes = b"3") -> dict[str, Any]:
    data = abi_encode(["uint256", "bytes"], [status, result])
    topics = [events.ORACLE_FULFILLED_TOPIC, _topic(REQUEST_ID)]
    return {"topics": topics, "data": "0x" + data.hex()} | POSITION


def test_requested_log_decodes_every_field() -> None:
    """OracleRequested yields request id, worker, consumer, workload, expiry, gas, params."""
    ev = events.decode_oracle_log(requested_log())

    assert isinstance(ev, events.OracleRequested)
    assert (ev.request_id, ev.worker_id, ev.requester.lower()) == (
        REQUEST_ID,
        WORKER_ID,
        CONSUMER,
    )
    assert (ev.workload, ev.expiry, ev.callback_gas) == (WORKLOAD, 1234, 300_000)
    assert ev.params == b'{"inputs":["x"]}'


def test_fulfilled_and_cancelled_logs_decode() -> None:
    """OracleFulfilled yields status and result; OracleCancelled the request id."""
    fulfilled = events.decode_oracle_log(fulfilled_log(5, b"refused"))
    cancelled = events.decode_oracle_log(
        {"topics": [events.ORACLE_CANCELLED_TOPIC, _topic(REQUEST_ID)], "data": "0x"}
        | POSITION
    )

    assert isinstance(fulfilled, events.OracleFulfilled)
    assert (fulfilled.request_id, fulfilled.status, fulfilled.result) == (
        REQUEST_ID,
        5,
        b"refused",
    )
    assert isinstance(cancelled, events.OracleCancelled)
    assert cancelled.request_id == REQUEST_ID


def _dirty_requester() -> dict[str, Any]:
    raw = requested_log()
    raw["topics"][3] = _topic(b"\x01" * 12 + bytes.fromhex(CONSUMER[2:]))
    return raw


def _expiry_too_wide() -> dict[str, Any]:
    data = abi_encode(
        ["bytes32", "uint256", "uint32", "bytes"], [WORKLOAD, 2**64, 0, b"x"]
    )
    return requested_log() | {"data": "0x" + data.hex()}


def _missing_topic() -> dict[str, Any]:
    raw = requested_log()
    return raw | {"topics": raw["topics"][:3]}


def _cancel_with_data() -> dict[str, Any]:
    topics = [events.ORACLE_CANCELLED_TOPIC, _topic(REQUEST_ID)]
    return {"topics": topics, "data": "0x" + "00" * 32} | POSITION


def _registry_topic() -> dict[str, Any]:
    return fulfilled_log() | {"topics": [events.COMPLETED_TOPIC, _topic(REQUEST_ID)]}


def _result_overrun() -> dict[str, Any]:
    raw = fulfilled_log(0, b"abc")
    data = bytearray(bytes.fromhex(raw["data"][2:]))
    data[64 + 31] = 200
    return raw | {"data": "0x" + data.hex()}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_dirty_requester, "dirty high bytes"),
        (_expiry_too_wide, "uint64"),
        (_missing_topic, "expected 3 indexed topics, got 2"),
        (_cancel_with_data, "expected no data"),
        (_registry_topic, "unknown event topic"),
        (_result_overrun, "declares 200 bytes"),
    ],
    ids=[
        "dirty-requester",
        "expiry-too-wide",
        "missing-topic",
        "cancel-with-data",
        "registry-topic",
        "result-overrun",
    ],
)
def test_malformed_oracle_logs_are_reported_not_raised(make: Any, reason: str) -> None:
    """An oracle log that does not fit the ABI becomes MalformedLog with its position."""
    ev = events.decode_oracle_log(make())

    assert isinstance(ev, events.MalformedLog)
    assert reason in ev.reason
    assert "block 16" in str(ev) and "log 3" in str(ev)
