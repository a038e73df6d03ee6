"""Builders for raw registry logs, as a node would return them."""

from __future__ import annotations

import os

from eth_abi import encode as abi_encode

from connector.ethereum import events

REGISTRY = "0x" + "ab" * 20


def submitted_log(
    request: bytes,
    *,
    work_order_id: bytes | None = None,
    worker_id: bytes = b"\x01" * 32,
    requester_id: bytes = b"\x02" * 32,
    requester: str = "0x" + "cd" * 20,
    order_key: bytes | None = None,
    callback_gas: int = 0,
) -> dict[str, object]:
    work_order_id = work_order_id or os.urandom(32)
    order_key = order_key or os.urandom(32)
    data = abi_encode(
        ["bytes32", "address", "uint32", "bytes"],
        [order_key, requester, callback_gas, request],
    )
    return {
        "address": REGISTRY,
        "topics": [
            events.SUBMITTED_TOPIC,
            "0x" + work_order_id.hex(),
            "0x" + worker_id.hex(),
            "0x" + requester_id.hex(),
        ],
        "data": "0x" + data.hex(),
    }


def completed_log(order_key: bytes, status: int, response: bytes) -> dict[str, object]:
    data = abi_encode(["uint256", "bytes"], [status, response])
    return {
        "address": REGISTRY,
        "topics": [
            events.COMPLETED_TOPIC,
            "0x" + order_key.hex(),
            "0x" + "00" * 32,
            "0x" + "00" * 32,
        ],
        "data": "0x" + data.hex(),
    }
