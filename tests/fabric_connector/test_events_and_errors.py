"""Strict decoding of chaincode events, and the one gRPC error mapping."""

from __future__ import annotations

import json

import grpc
import pytest

from connector.fabric import events as ev
from connector.fabric.gateway import EndorsementRefused, translate
from enclave_bridge.errors import ConfigurationError, NodeUnavailable, TcbridgeError

KEY = "ab" * 32


def payload(document: object) -> bytes:
    return json.dumps(document).encode()


def test_batch_completion_yields_settlements_and_skips_in_order() -> None:
    """A batch event gives its completed orders, then its skipped ones with numbered reasons."""
    items = ev.decode_event(ev.COMPLETED, payload({
        "orders": [{"orderKey": KEY, "status": 0, "response": "{}"}],
        "skipped": [{"orderKey": "cd" * 32, "reason": "bad-signature"}],
    }), 7, "tx")
    done, skipped = items
    assert isinstance(done, ev.OrderCompleted) and done.status == 0
    assert isinstance(skipped, ev.CompletionSkipped)
    assert skipped.reason_code == ev.SKIP_REASONS["bad-signature"]
    assert (skipped.ref.block_number, skipped.ref.tx_id, skipped.ref.index) == (7, "tx", 1)


@pytest.mark.parametrize(
    ("name", "document", "reason"),
    [
        (ev.COMPLETED, {"orders": [{"orderKey": KEY, "status": True}]}, "status"),
        (ev.COMPLETED, {"orders": [{"orderKey": KEY, "status": -1}]}, "status"),
        (ev.CANCELLED, {"orders": [{"orderKey": "xyz"}]}, "orderKey is not 32 bytes"),
        (ev.SUBMITTED, {"orders": [7]}, "not a JSON object"),
        (ev.SUBMITTED, {"orders": [], "skipped": 1}, "'skipped' is not an array"),
        (ev.SUBMITTED, {"orders": [{"orderKey": KEY, "workOrderId": "w", "workerId": "x",
                                    "requesterId": "r", "request": "{}"}]},
         "requester.mspId"),
    ],
    ids=["status-bool", "status-negative", "key-not-hex", "item-not-object",
         "skipped-not-array", "no-requester"],
)
def test_items_that_do_not_fit_are_malformed(name: str, document: object,
                                             reason: str) -> None:
    """Every shape the chaincode never emits becomes a MalformedEvent naming the problem."""
    [item] = ev.decode_event(name, payload(document), 1, "t")
    assert isinstance(item, ev.MalformedEvent)
    assert reason in item.reason


def test_events_that_are_not_about_orders_are_ignored() -> None:
    """WorkerRegistered and other registry events decode to nothing (the checkpoint still moves)."""
    assert ev.decode_event("WorkerRegistered", b"not even json", 1, "t") == []


class _Failed(grpc.aio.AioRpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_every_grpc_status_maps_to_a_tcbridge_error(code: grpc.StatusCode) -> None:
    """The gateway's single mapping turns every gRPC status into a tcbridge error."""
    error = translate(_Failed(code, "x"), "endorse", "127.0.0.1:1")
    assert isinstance(error, TcbridgeError)
    if code is grpc.StatusCode.UNAVAILABLE:
        assert isinstance(error, NodeUnavailable)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        assert isinstance(error, ConfigurationError)


def test_a_chaincode_refusal_carries_its_code() -> None:
    """An ABORTED endorsement exposes the chaincode's error code as the reason."""
    error = translate(
        _Failed(grpc.StatusCode.ABORTED,
                "endorse failed: chaincode response 500, DuplicateOrder: work order x"),
        "endorse", "127.0.0.1:1",
    )
    assert isinstance(error, EndorsementRefused)
    assert error.reason == "DuplicateOrder"
