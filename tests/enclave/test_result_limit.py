"""The result size limit: at the limit and one byte under a result is signed; one byte over, an error."""

from __future__ import annotations

import json
from collections.abc import Callable

from eth_utils import keccak

from enclave_bridge.eea import Limits
from enclave_bridge.processor import EthereumTarget, ProcessorPolicy, WorkOrderProcessor
from enclave_bridge.requester import WorkerDetails, build_work_order, verify_response
from enclave_bridge.result_signature import EthereumDomain, recover_eip712_signer
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors

pytestmark = requires_vectors

TARGET = EthereumTarget(EthereumDomain(31337, "0x" + "12" * 20), keccak(b"k"), keccak(b"r"))
PAYLOAD = b"z" * 3000


def test_result_at_under_and_over_the_limit(
    make_processor: Callable[..., WorkOrderProcessor], worker_details: WorkerDetails
) -> None:
    """A limit equal to the response size or one above passes byte for byte; one below is refused, not cut."""
    sent = build_work_order(worker_details, "echo-result", [PAYLOAD], rng=vectors.fixed_rng())
    rng = vectors.fixed_rng(b"same answer")
    size = len(make_processor().process(sent.request, rng=rng).response_bytes)

    outcomes = {}
    for name, limit in {"under": size + 1, "at": size, "over": size - 1}.items():
        policy = ProcessorPolicy(limits=Limits(max_response_bytes=limit))
        outcomes[name] = make_processor(policy).process(
            sent.request, target=TARGET, rng=vectors.fixed_rng(b"same answer")
        )

    for name in ("under", "at"):
        verdict = verify_response(sent, outcomes[name].response, worker_details)
        assert verdict.accepted and verdict.outputs[0].data == b"RESULT: " + PAYLOAD
        assert len(outcomes[name].response_bytes) == size
    over = outcomes["over"]
    assert over.status != 0
    error = json.loads(over.response_bytes)["error"]
    assert f"{size} bytes, over this worker's limit of {size - 1}" in error["message"]
    assert "result" not in json.loads(over.response_bytes)
    signer = recover_eip712_signer(
        over.result_signature or b"", TARGET.domain, TARGET.order_key, TARGET.request_hash,
        keccak(over.response_bytes), over.status,
    )
    assert signer == vectors.worker_keys().signing_address
