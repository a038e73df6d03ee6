"""Work-order receipts: signature checks over the documented digests, updates, lookups."""

from __future__ import annotations

import os
from typing import Any

import coincurve
import pytest

from enclave_bridge import crypto
from enclave_bridge.eea import EeaError
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.listener_receipts import (
    LAST_UPDATE,
    receipt_create_digest,
    receipt_update_digest,
)
from enclave_bridge.requester import SentWorkOrder, WorkerDetails, build_work_order
from tests.enclave.conftest import requires_vectors
from tests.listener.conftest import Harness

pytestmark = [requires_vectors, pytest.mark.asyncio(loop_scope="module")]

SERVICE_ID = "5e" * 32


async def _signed_order(
    harness: Harness, details: WorkerDetails
) -> tuple[SentWorkOrder, bytes]:
    requester_key = os.urandom(32)
    sent = build_work_order(
        details, "echo-result", [b"receipt me"], requester_key=requester_key
    )
    answer = await harness.call("WorkOrderSubmit", sent.request["params"])
    assert "result" in answer, answer
    return sent, requester_key


def _create_params(sent: SentWorkOrder, key: bytes, **changes: Any) -> dict[str, Any]:
    params = sent.params
    receipt: dict[str, Any] = {
        "workOrderId": params["workOrderId"],
        "workerServiceId": SERVICE_ID,
        "workerId": params["workerId"],
        "requesterId": params["requesterId"],
        "receiptCreateStatus": 0,
        "workOrderRequestHash": sent.request_hash.hex(),
        "requesterGeneratedNonce": os.urandom(16).hex(),
        "signatureRules": "SHA-256/secp256k1",
        "receiptVerificationKey": crypto.public_key_pem(
            coincurve.PrivateKey(key).public_key
        ),
    }
    receipt.update(changes)
    receipt["requesterSignature"] = crypto.sign_digest_b64(
        key, receipt_create_digest(receipt)
    )
    return receipt


def _update_params(
    work_order_id: str, updater_id: str, key: bytes, data: str, update_type: int = 1
) -> dict[str, Any]:
    update: dict[str, Any] = {
        "workOrderId": work_order_id,
        "updaterId": updater_id,
        "updateType": update_type,
        "updateData": data,
        "signatureRules": "SHA-256/secp256k1",
    }
    update["updateSignature"] = crypto.sign_digest_b64(
        key, receipt_update_digest(update)
    )
    return update


async def test_receipt_create_checks_the_requester_signature(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """A receipt signed by the order's requester key is stored; forged or foreign ones are refused."""
    sent, key = await _signed_order(harness, vector_details)
    work_order_id = sent.params["workOrderId"]
    stranger = os.urandom(32)

    tampered = _create_params(sent, key)
    tampered["requesterGeneratedNonce"] = "00"
    refusals = [
        (tampered, EeaError.INVALID_SIGNATURE),
        (_create_params(sent, stranger), EeaError.ACCESS_DENIED),
        (_create_params(sent, key, requesterId="12" * 32), EeaError.ACCESS_DENIED),
        (
            _create_params(sent, key, workOrderRequestHash="00" * 32),
            EeaError.INVALID_PARAMETER,
        ),
        (_create_params(sent, key, workerId="99" * 32), EeaError.INVALID_PARAMETER),
    ]
    for params, code in refusals:
        answer = await harness.call("WorkOrderReceiptCreate", params)
        assert answer["error"]["code"] == code, answer
        assert answer["error"]["data"]["workOrderId"] == work_order_id

    created = await harness.call("WorkOrderReceiptCreate", _create_params(sent, key))
    assert created["error"]["code"] == EeaError.SUCCESS
    again = await harness.call("WorkOrderReceiptCreate", _create_params(sent, key))
    assert again["error"]["code"] == EeaError.INVALID_PARAMETER

    retrieved = (
        await harness.call("WorkOrderReceiptRetrieve", {"workOrderId": work_order_id})
    )["result"]
    assert retrieved["workerServiceId"] == SERVICE_ID
    assert retrieved["receiptCurrentStatus"] == 0
    assert retrieved["updateCount"] == 0


async def test_receipt_updates_by_requester_and_worker(
    harness: Harness, vector_details: WorkerDetails, vector_keys: WorkerKeys
) -> None:
    """The requester and the worker may update a receipt with valid signatures; others and replays are refused."""
    sent, key = await _signed_order(harness, vector_details)
    params = sent.params
    work_order_id = params["workOrderId"]
    created = await harness.call("WorkOrderReceiptCreate", _create_params(sent, key))
    assert created["error"]["code"] == EeaError.SUCCESS

    by_requester = _update_params(work_order_id, params["requesterId"], key, "seen")
    by_worker = _update_params(
        work_order_id, params["workerId"], vector_keys.signing_key, "done", 2
    )
    for update in (by_requester, by_worker):
        answer = await harness.call("WorkOrderReceiptUpdate", update)
        assert answer["error"]["code"] == EeaError.SUCCESS, answer

    replay = await harness.call("WorkOrderReceiptUpdate", by_requester)
    assert replay["error"]["code"] == EeaError.INVALID_PARAMETER
    stranger = os.urandom(32)
    other = _update_params(work_order_id, "77" * 32, stranger, "x")
    assert (await harness.call("WorkOrderReceiptUpdate", other))["error"]["code"] == (
        EeaError.ACCESS_DENIED
    )
    forged = _update_params(work_order_id, params["workerId"], stranger, "forged")
    assert (await harness.call("WorkOrderReceiptUpdate", forged))["error"]["code"] == (
        EeaError.INVALID_SIGNATURE
    )

    first = await harness.call(
        "WorkOrderReceiptUpdateRetrieve",
        {"workOrderId": work_order_id, "updateIndex": 0},
    )
    assert first["result"]["updateData"] == "seen"
    assert first["result"]["updateCount"] == 2
    last = await harness.call(
        "WorkOrderReceiptUpdateRetrieve",
        {"workOrderId": work_order_id, "updateIndex": LAST_UPDATE},
    )
    assert last["result"]["updateData"] == "done"
    missing = await harness.call(
        "WorkOrderReceiptUpdateRetrieve",
        {"workOrderId": work_order_id, "updateIndex": 5},
    )
    assert missing["error"]["code"] == EeaError.INVALID_PARAMETER

    found = await harness.call(
        "WorkOrderReceiptLookUp", {"requesterId": params["requesterId"]}
    )
    assert found["result"]["ids"] == [work_order_id.lower()]
    after = await harness.call(
        "WorkOrderReceiptLookUpNext",
        {"requesterId": params["requesterId"], "lastLookUpTag": work_order_id.lower()},
    )
    assert after["result"]["ids"] == []
