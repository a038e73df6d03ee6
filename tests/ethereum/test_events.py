"""Strict decoding of the registry's raw logs."""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode

from connector.ethereum import events
from tests.support.logs import completed_log, submitted_log

POSITION = {
    "blockNumber": "0x10",
    "blockHash": "0x" + "11" * 32,
    "transactionHash": "0x" + "22" * 32,
    "logIndex": "0x3",
}


def test_submitted_log_decodes_every_field() -> None:
    """A well-formed WorkOrderSubmitted log yields its ids, requester and request."""
    raw = (
        submitted_log(b'{"x":1}', work_order_id=b"\x07" * 32, order_key=b"\x09" * 32)
        | POSITION
    )

    ev = events.decode_log(raw)

    assert isinstance(ev, events.WorkOrderSubmitted)
    assert (ev.work_order_id, ev.order_key, ev.request) == (
        b"\x07" * 32,
        b"\x09" * 32,
        b'{"x":1}',
    )
    assert ev.requester == "0x" + "Cd" * 20 or ev.requester.lower() == "0x" + "cd" * 20
    assert (ev.ref.block_number, ev.ref.log_index) == (16, 3)


def test_completed_log_decodes_status_and_response() -> None:
    """A WorkOrderCompleted log yields its order key, status and response bytes."""
    ev = events.decode_log(completed_log(b"\x05" * 32, 2, b"resp") | POSITION)

    assert isinstance(ev, events.WorkOrderCompleted)
    assert (ev.order_key, ev.status, ev.response) == (b"\x05" * 32, 2, b"resp")


def _bad_length() -> dict[str, object]:
    raw = submitted_log(b"abcdef") | POSITION
    data = bytearray(bytes.fromhex(str(raw["data"])[2:]))
    data[128 + 31] = 200  # declares 200 bytes, carries 6
    return raw | {"data": "0x" + data.hex()}


def _extra_topic() -> dict[str, object]:
    raw = submitted_log(b"abc") | POSITION
    return raw | {"topics": [*raw["topics"], "0x" + "00" * 32]}  # type: ignore[misc]


def _dirty_address() -> dict[str, object]:
    data = abi_encode(
        ["bytes32", "uint256", "uint32", "bytes"], [b"\x00" * 32, 2**200, 0, b"x"]
    )
    return submitted_log(b"x") | POSITION | {"data": "0x" + data.hex()}


def _trailing() -> dict[str, object]:
    raw = submitted_log(b"abc") | POSITION
    return raw | {"data": str(raw["data"]) + "00" * 32}


def _not_hex() -> dict[str, object]:
    return submitted_log(b"abc") | POSITION | {"data": "0xzz"}


def _bad_offset() -> dict[str, object]:
    raw = submitted_log(b"abc") | POSITION
    data = bytearray(bytes.fromhex(str(raw["data"])[2:]))
    data[96 + 31] = 0x40
    return raw | {"data": "0x" + data.hex()}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_bad_length, "declares 200 bytes"),
        (_extra_topic, "expected 3 indexed topics, got 4"),
        (_dirty_address, "dirty high bytes"),
        (_trailing, "trailing bytes"),
        (_not_hex, "not hex"),
        (_bad_offset, "offset"),
    ],
    ids=[
        "length-overrun",
        "extra-topic",
        "dirty-address",
        "trailing",
        "not-hex",
        "bad-offset",
    ],
)
def test_malformed_logs_are_reported_with_their_position(make, reason) -> None:  # type: ignore[no-untyped-def]
    """A log that does not fit the ABI becomes MalformedLog naming block, tx and index."""
    ev = events.decode_log(make())

    assert isinstance(ev, events.MalformedLog)
    assert reason in ev.reason
    assert "block 16" in str(ev) and "log 3" in str(ev) and "0x" + "22" * 32 in str(ev)


def test_unknown_topic_is_malformed_not_an_exception() -> None:
    """A log with a topic the registry never emits is quarantined."""
    raw = {
        "address": "0x" + "ab" * 20,
        "topics": ["0x" + "ee" * 32],
        "data": "0x",
    } | POSITION

    assert isinstance(events.decode_log(raw), events.MalformedLog)
