"""The registry's ids (event topics) against the request's own, and caller refusals."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from eth_utils.crypto import keccak

from enclave_bridge.eea import EeaError
from enclave_bridge.errors import BugError
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.processor import (
    STAGES,
    EthereumTarget,
    ProcessOutcome,
    WorkOrderProcessor,
)
from enclave_bridge.requester import SentWorkOrder, WorkerDetails, build_work_order
from enclave_bridge.result_signature import EthereumDomain, recover_eip712_signer
from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadInput,
    WorkloadOutput,
    WorkloadRegistry,
    WorkloadResult,
)
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors

pytestmark = requires_vectors

DOMAIN = EthereumDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
TARGET = EthereumTarget(DOMAIN, keccak(b"order"), keccak(b"request bytes"))
REQUESTER_KEY = bytes.fromhex("11" * 32)


class Counting:
    """echo-result that counts its runs."""

    name = "echo-result"
    stateful = False

    def __init__(self) -> None:
        self.runs = 0

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        self.runs += 1
        return WorkloadResult(outputs=[WorkloadOutput(0, inputs[0].data)])


@pytest.fixture
def workload() -> Counting:
    return Counting()


@pytest.fixture
def other_keys(worker_keys: WorkerKeys) -> WorkerKeys:
    """A second identity held by the same processor."""
    return WorkerKeys("cd" * 32, bytes.fromhex("77" * 32), worker_keys.encryption_key)


@pytest.fixture
def processor(
    worker_keys: WorkerKeys, other_keys: WorkerKeys, workload: Counting
) -> WorkOrderProcessor:
    registry = WorkloadRegistry()
    registry.register(workload)
    return WorkOrderProcessor(
        {worker_keys.worker_id: worker_keys, other_keys.worker_id: other_keys},
        registry,
    )


def order(details: WorkerDetails, **kwargs: Any) -> SentWorkOrder:
    kwargs.setdefault("requester_key", REQUESTER_KEY)
    kwargs.setdefault("rng", vectors.fixed_rng(b"topic ids"))
    return build_work_order(details, "echo-result", [b"hi"], **kwargs)


def ids_of(sent: SentWorkOrder) -> dict[str, str]:
    params = sent.params
    return {
        "workOrderId": params["workOrderId"].lower(),
        "workerId": params["workerId"].lower(),
        "requesterId": params["requesterId"].lower(),
    }


def signer_of(outcome: ProcessOutcome) -> str | None:
    assert outcome.result_signature is not None
    return recover_eip712_signer(
        outcome.result_signature,
        DOMAIN,
        TARGET.order_key,
        TARGET.request_hash,
        keccak(outcome.response_bytes),
        outcome.status,
    )


def test_matching_ids_in_any_case_run(
    processor: WorkOrderProcessor,
    worker_details: WorkerDetails,
    worker_keys: WorkerKeys,
    workload: Counting,
) -> None:
    """Ids equal to the registry's, compared case-insensitively, let the order run."""
    sent = order(worker_details)
    expected = {name: value.upper() for name, value in ids_of(sent).items()}

    outcome = processor.process(sent.request, target=TARGET, expected_ids=expected)

    assert outcome.status == 0 and outcome.stage is None
    assert workload.runs == 1
    assert signer_of(outcome) == worker_keys.signing_address


@pytest.mark.parametrize("field", ["workOrderId", "workerId", "requesterId"])
def test_differing_id_is_refused_and_signed_by_the_registry_worker(
    field: str,
    processor: WorkOrderProcessor,
    worker_details: WorkerDetails,
    worker_keys: WorkerKeys,
    workload: Counting,
) -> None:
    """A request whose id differs from the topic's gets code 2, names both, never runs."""
    sent = order(worker_details)
    expected = ids_of(sent)
    registry_value = "ab" * 32 if field != "workerId" else expected[field]
    if field == "workerId":
        # The JSON names an id the pool does not hold; the topic names ours.
        request = json.loads(json.dumps(sent.request))
        request["params"]["workerId"] = "ef" * 32
        sent_value = "ef" * 32
    else:
        expected[field] = registry_value
        request = sent.request
        sent_value = sent.params[field]
    claims: list[bytes] = []

    def claim(request_hash: bytes) -> bool:
        claims.append(request_hash)
        return True

    outcome = processor.process(
        request, target=TARGET, expected_ids=expected, claim_request=claim
    )

    assert outcome.status == EeaError.INVALID_PARAMETER
    assert outcome.stage == "ids" and outcome.stage in STAGES
    message = outcome.response["error"]["message"]
    assert message.startswith(f"{field}:")
    assert sent_value in message and expected[field] in message
    answered_id = outcome.response["error"]["data"]["workOrderId"]
    assert answered_id.lower() == expected["workOrderId"]
    assert workload.runs == 0 and claims == []
    assert signer_of(outcome) == worker_keys.signing_address


def test_json_naming_another_held_worker_is_signed_by_the_expected_one(
    processor: WorkOrderProcessor,
    worker_details: WorkerDetails,
    worker_keys: WorkerKeys,
    other_keys: WorkerKeys,
    workload: Counting,
) -> None:
    """The topic's worker signs even when the JSON names another identity of the pool."""
    sent = order(worker_details)
    expected = {**ids_of(sent), "workerId": other_keys.worker_id}

    outcome = processor.process(sent.request, target=TARGET, expected_ids=expected)

    assert outcome.status == EeaError.INVALID_PARAMETER and outcome.stage == "ids"
    assert workload.runs == 0
    assert signer_of(outcome) == other_keys.signing_address
    assert signer_of(outcome) != worker_keys.signing_address


@pytest.mark.parametrize("request_bytes", [b"{not json", b"[1, 2]", b'{"params": 7}'])
def test_unparseable_request_is_signed_by_the_expected_worker(
    request_bytes: bytes,
    processor: WorkOrderProcessor,
    other_keys: WorkerKeys,
) -> None:
    """Even a request that does not parse is answered under the registry's worker."""
    expected = {
        "workOrderId": "01" * 32,
        "workerId": other_keys.worker_id,
        "requesterId": "02" * 32,
    }

    outcome = processor.process(request_bytes, target=TARGET, expected_ids=expected)

    assert outcome.stage == "parse" and outcome.status != 0
    assert outcome.response["error"]["data"]["workOrderId"] == "01" * 32
    assert signer_of(outcome) == other_keys.signing_address


def test_expected_worker_not_held_gets_no_signature(
    worker_keys: WorkerKeys, worker_details: WorkerDetails, workload: Counting
) -> None:
    """A one-identity processor does not sign for a registry worker it does not hold."""
    registry = WorkloadRegistry()
    registry.register(workload)
    processor = WorkOrderProcessor({worker_keys.worker_id: worker_keys}, registry)
    sent = order(worker_details)
    expected = {**ids_of(sent), "workerId": "ef" * 32}

    outcome = processor.process(sent.request, target=TARGET, expected_ids=expected)
    unparseable = processor.process(b"{", target=TARGET, expected_ids=expected)

    assert outcome.status == EeaError.INVALID_PARAMETER and outcome.stage == "ids"
    assert outcome.result_signature is None
    assert unparseable.result_signature is None
    assert workload.runs == 0


@pytest.mark.parametrize(
    "ids",
    [
        {"workOrderId": "01", "workerId": "02"},
        {"workOrderId": "01", "workerId": "02", "requesterId": "0x03"},
        {"workOrderId": "01", "workerId": 2, "requesterId": "03"},
        {"workOrderId": "", "workerId": "02", "requesterId": "03"},
    ],
    ids=["missing", "0x-prefix", "not-a-string", "empty"],
)
def test_malformed_expected_ids_are_a_bug(
    ids: dict[str, Any], processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """expected_ids that are not three hex strings raise BugError (the caller's fault)."""
    with pytest.raises(BugError, match="expected_ids"):
        processor.process(order(worker_details).request, expected_ids=ids)


def test_caller_refusal_is_signed_and_runs_nothing(
    processor: WorkOrderProcessor,
    worker_details: WorkerDetails,
    other_keys: WorkerKeys,
    workload: Counting,
) -> None:
    """refusal() answers with the given code and message, signed by the expected worker."""
    sent = order(worker_details)
    expected = {**ids_of(sent), "workerId": other_keys.worker_id}

    outcome = processor.refusal(
        json.dumps(sent.request).encode(),
        EeaError.ACCESS_DENIED,
        "requester is over its hourly limit",
        target=TARGET,
        expected_ids=expected,
    )

    assert outcome.status == EeaError.ACCESS_DENIED and outcome.stage == "caller"
    assert outcome.request_hash is None and outcome.new_state is None
    error = outcome.response["error"]
    assert error["message"] == "requester is over its hourly limit"
    assert error["data"]["workOrderId"] == sent.params["workOrderId"]
    assert outcome.response["id"] == sent.request["id"]
    assert workload.runs == 0
    assert signer_of(outcome) == other_keys.signing_address
