"""Avalon clients work unchanged: vectors over HTTP and the generic client's flow."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from enclave_bridge.eea import WorkOrderStatus
from enclave_bridge.identity import SealedIdentity, verify_encryption_key_signature
from enclave_bridge.requester import (
    SentWorkOrder,
    WorkerDetails,
    build_work_order,
    verify_response,
)
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors
from tests.listener.conftest import POLL_S, POLLS, Harness, run_listener

pytestmark = [requires_vectors, pytest.mark.asyncio(loop_scope="module")]

CASES = vectors.case_ids()
STATELESS = [c for c in CASES if not vectors.load_case(c).tags["stateful"]]
STATEFUL = [c for c in CASES if vectors.load_case(c).tags["stateful"]]


def _check(case_id: str, answer: dict[str, Any], details: WorkerDetails) -> None:
    case = vectors.load_case(case_id)
    sent = SentWorkOrder.from_request(
        case.request, bytes.fromhex(case.secrets["sessionKeyHex"])
    )
    assert "result" in answer, answer
    assert answer["id"] == case.request["id"]
    verdict = verify_response(sent, answer, details)
    assert verdict.accepted, f"{case_id}: {verdict.reason}"
    assert [o.data for o in verdict.outputs] == [
        bytes.fromhex(o["hex"]) for o in case.expected["outputs"]
    ]


async def _submit_and_poll(
    harness: Harness, request: dict[str, Any], *, poll_s: float = 0.05
) -> dict[str, Any]:
    """Avalon's direct client: WorkOrderSubmit, then WorkOrderGetResult while pending."""
    answer = await harness.call(
        "WorkOrderSubmit", request["params"], rpc_id=request["id"]
    )
    work_order_id = request["params"]["workOrderId"]
    while "error" in answer and answer["error"]["code"] in (
        WorkOrderStatus.PENDING,
        WorkOrderStatus.SCHEDULED,
    ):
        assert answer["error"]["data"]["workOrderId"] == work_order_id
        await asyncio.sleep(poll_s)
        answer = await harness.call(
            "WorkOrderGetResult", {"workOrderId": work_order_id}, rpc_id=request["id"]
        )
    return answer


async def test_every_stateless_vector_over_http_verifies(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """Each stateless Avalon request posted to the listener returns a result Avalon's recipe verifies."""
    answers = await asyncio.gather(
        *(
            _submit_and_poll(harness, vectors.load_case(c).fresh_request())
            for c in STATELESS
        )
    )

    assert len(answers) == len(STATELESS) > 10
    for case_id, answer in zip(STATELESS, answers, strict=True):
        _check(case_id, answer, vector_details)


@pytest.mark.parametrize("case_id", STATEFUL)
async def test_stateful_vector_over_http_on_a_fresh_pool(
    case_id: str,
    tmp_path: Path,
    sealed_worker: SealedIdentity,
    vector_details: WorkerDetails,
) -> None:
    """A heart-disease vector posted to a fresh listener and pool answers as expected.json says."""
    async with run_listener(tmp_path, sealed_worker) as fresh:
        answer = await _submit_and_poll(
            fresh, vectors.load_case(case_id).fresh_request()
        )

    _check(case_id, answer, vector_details)


async def test_generic_client_flow(harness: Harness) -> None:
    """WorkerLookUp, WorkerRetrieve, EncryptionKeyGet, async WorkOrderSubmit, polling: as Avalon's generic client."""
    lookup = await harness.call("WorkerLookUp", {"workerType": 1})
    assert lookup["result"]["totalCount"] >= 1
    worker_id = vectors.worker()["workerId"]
    assert worker_id in lookup["result"]["ids"]

    retrieved = await harness.call("WorkerRetrieve", {"workerId": worker_id})
    result = retrieved["result"]
    assert result["status"] == 1 and result["workerType"] == 1
    details = WorkerDetails.from_json(retrieved, worker_id)
    assert details.encryption_key_signed()

    key = await harness.call(
        "EncryptionKeyGet", {"workerId": worker_id, "tag": "t1", "requesterId": "ab"}
    )
    assert key["result"]["encryptionKey"] == details.encryption_key_pem
    assert verify_encryption_key_signature(
        details.verification_key_pem,
        key["result"]["encryptionKey"],
        key["result"]["signature"],
    )

    sent = build_work_order(
        details, "echo-result", [b"generic client"], style="avalon", timeout_msecs=0
    )
    first = await harness.call("WorkOrderSubmit", sent.request["params"])
    assert first["error"]["code"] == WorkOrderStatus.SCHEDULED
    answer = await _submit_poll_only(harness, sent.request["params"]["workOrderId"])
    verdict = verify_response(sent, answer, details)
    assert verdict.accepted, verdict.reason
    assert verdict.outputs[0].data == b"RESULT: generic client"


async def _submit_poll_only(harness: Harness, work_order_id: str) -> dict[str, Any]:
    for _ in range(POLLS):
        answer = await harness.call(
            "WorkOrderGetResult", {"workOrderId": work_order_id}
        )
        if "error" not in answer or answer["error"]["code"] != WorkOrderStatus.PENDING:
            return answer
        await asyncio.sleep(POLL_S)
    raise AssertionError("the work order stayed pending")
