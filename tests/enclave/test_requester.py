"""Requester helpers: building orders and judging the answers."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from enclave_bridge import crypto
from enclave_bridge.eea import OAEP_SHA256, ResponseItem, parse_request
from enclave_bridge.errors import ConfigurationError, WorkOrderError
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.processor import WorkOrderProcessor
from enclave_bridge.requester import (
    InputItem,
    OutputSlot,
    SentWorkOrder,
    WorkerDetails,
    build_work_order,
    decrypt_outputs,
    verify_response,
)
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors

pytestmark = requires_vectors

REQUESTER_KEY = bytes.fromhex("55" * 32)


def sent_and_answer(
    processor: WorkOrderProcessor, details: WorkerDetails, **kwargs: Any
) -> tuple[SentWorkOrder, dict[str, Any]]:
    kwargs.setdefault("rng", vectors.fixed_rng(b"requester"))
    sent = build_work_order(
        details,
        "echo-result",
        [b"first", b"second"],
        requester_key=REQUESTER_KEY,
        **kwargs,
    )
    outcome = processor.process(sent.request, rng=vectors.fixed_rng(b"worker"))
    assert outcome.status == 0, outcome.response
    return sent, outcome.response


def resign(response: dict[str, Any], keys: WorkerKeys) -> dict[str, Any]:
    """Sign a changed response again with the worker key (to isolate other checks)."""
    result = response["result"]
    items = [ResponseItem(**_snake(item)) for item in result["outData"]]
    digest = crypto.response_hash(
        result["workerNonce"],
        result["workOrderId"],
        result["workerId"],
        result["workloadId"],
        result["requesterId"],
        items,
    )
    result["workerSignature"] = crypto.sign_digest_b64(keys.signing_key, digest)
    return response


def _snake(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": item["index"],
        "data_hash": item["dataHash"],
        "data": item["data"],
        "encrypted_data_encryption_key": item["encryptedDataEncryptionKey"],
        "iv": item["iv"],
    }


def test_worker_details_from_eea_json() -> None:
    """Details load from the vectors' worker file and from a bare WorkerRetrieve result."""
    document = vectors.worker()

    details = WorkerDetails.from_json(document)
    bare = WorkerDetails.from_json(
        document["workerRetrieveResponse"]["result"], worker_id=details.worker_id
    )

    assert details.worker_id == document["workerId"]
    assert bare.encryption_key_pem == details.encryption_key_pem
    assert details.encryption_key_signed()
    assert details.proof_data_type == "TEE-SGX-IAS"
    with pytest.raises(ConfigurationError, match="pass worker_id"):
        WorkerDetails.from_json(document["workerRetrieveResponse"]["result"])
    with pytest.raises(ConfigurationError, match="encryptionKey"):
        WorkerDetails.from_json({"workerId": "aa", "result": {"details": {}}})


def test_encryption_key_signature_detects_a_swapped_key(
    worker_details: WorkerDetails,
) -> None:
    """A details document whose encryption key was replaced fails the key signature check."""
    swapped = WorkerDetails(
        worker_details.worker_id,
        worker_details.encryption_key_pem.replace("A", "B", 1),
        worker_details.verification_key_pem,
        worker_details.encryption_key_signature,
    )

    assert not swapped.encryption_key_signed()


def test_tcbridge_order_shape(
    worker_details: WorkerDetails, worker_keys: WorkerKeys
) -> None:
    """A tcbridge order names SHA-256 OAEP, gives each item its own IV and is signed."""
    sent = build_work_order(
        worker_details,
        "echo-result",
        [b"a", InputItem(b"b", with_data_hash=True), InputItem(b"c", "plain")],
        requester_key=REQUESTER_KEY,
        out_slots=[OutputSlot(0)],
    )
    params = sent.params

    assert params["keyEncryptionAlgorithm"] == OAEP_SHA256
    ivs = [
        params["inData"][0]["iv"],
        params["inData"][1]["iv"],
        params["outData"][0]["iv"],
    ]
    assert len(set(ivs) | {params["sessionKeyIv"]}) == 4
    assert "iv" not in params["inData"][2]
    wrapped = bytes.fromhex(params["encryptedSessionKey"])
    key = crypto.unwrap_session_key(
        worker_keys.encryption_key, wrapped, crypto.OaepHash.SHA256
    )
    assert key == sent.session_key
    digest = crypto.request_hash(parse_request(sent.request))
    sealed = bytes.fromhex(params["encryptedRequestHash"])
    assert crypto.gcm_decrypt(key, sent.session_iv, sealed) == digest
    verifying = crypto.load_verifying_key(params["verifyingKey"])
    assert crypto.verify_digest_b64(verifying, digest, params["requesterSignature"])
    assert params["inData"][1]["dataHash"] == crypto.data_hash_hex(b"b")


def test_avalon_order_shape(
    worker_details: WorkerDetails, worker_keys: WorkerKeys
) -> None:
    """An Avalon-style order uses SHA-1 OAEP, no item IVs and the session IV throughout."""
    sent = build_work_order(worker_details, "echo-result", [b"a"], style="avalon")
    params = sent.params

    assert "keyEncryptionAlgorithm" not in params
    assert "iv" not in params["inData"][0]
    assert params["requesterSignature"] == ""
    wrapped = bytes.fromhex(params["encryptedSessionKey"])
    key = crypto.unwrap_session_key(
        worker_keys.encryption_key, wrapped, crypto.OaepHash.SHA1
    )
    data = base64.b64decode(params["inData"][0]["data"])
    assert crypto.gcm_decrypt(key, sent.session_iv, data) == b"a"


def test_orders_are_reproducible_with_an_rng(worker_details: WorkerDetails) -> None:
    """The same rng gives the same order, apart from randomised OAEP padding."""
    one = build_work_order(
        worker_details, "echo-result", [b"x"], rng=vectors.fixed_rng()
    )
    two = build_work_order(
        worker_details, "echo-result", [b"x"], rng=vectors.fixed_rng()
    )

    for params in (one.params, two.params):
        assert isinstance(params, dict)
    strip = {"encryptedSessionKey"}
    assert {k: v for k, v in one.params.items() if k not in strip} == {
        k: v for k, v in two.params.items() if k not in strip
    }


Tamper = Callable[[dict[str, Any], WorkerKeys], dict[str, Any]]


def _flip_data(response: dict[str, Any], keys: WorkerKeys) -> dict[str, Any]:
    item = response["result"]["outData"][0]
    raw = bytearray(base64.b64decode(item["data"]))
    raw[0] ^= 1
    item["data"] = base64.b64encode(bytes(raw)).decode()
    return response


def _set(path: str, value: Any, *, sign: bool = False) -> Tamper:
    def tamper(response: dict[str, Any], keys: WorkerKeys) -> dict[str, Any]:
        target: Any = response["result"]
        parts = path.split("/")
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last: Any = int(parts[-1]) if isinstance(target, list) else parts[-1]
        if value is _REMOVE:
            del target[last]
        else:
            target[last] = value
        return resign(response, keys) if sign else response

    return tamper


def _shift_boundary(response: dict[str, Any], keys: WorkerKeys) -> dict[str, Any]:
    result = response["result"]
    result["workerId"] = result["workOrderId"][-1] + result["workerId"]
    result["workOrderId"] = result["workOrderId"][:-1]
    return response


def _high_s(response: dict[str, Any], keys: WorkerKeys) -> dict[str, Any]:
    result = response["result"]
    der = base64.b64decode(result["workerSignature"])
    result["workerSignature"] = base64.b64encode(crypto.flip_s(der)).decode()
    return response


_REMOVE = object()

# (tamper, accepted?, words the reason must contain)
TAMPERS: dict[str, tuple[Tamper, bool, str]] = {
    "untouched": (lambda r, k: r, True, ""),
    "high-s": (_high_s, True, ""),
    "outdata-byte-flip": (_flip_data, False, "workerSignature"),
    "outdata-byte-flip-resigned": (
        lambda r, k: resign(_flip_data(r, k), k),
        False,
        "does not decrypt",
    ),
    "workorderid-changed": (
        _set("workOrderId", "00" * 32, sign=True),
        False,
        "workOrderId",
    ),
    "requesterid-changed": (
        _set("requesterId", "00" * 32, sign=True),
        False,
        "requesterId",
    ),
    "id-boundary-shift": (_shift_boundary, False, "differs"),
    "nonce-changed": (_set("workerNonce", "A" * 44), False, "workerSignature"),
    "signature-missing": (_set("workerSignature", _REMOVE), False, "workerSignature"),
    "nonce-missing": (_set("workerNonce", _REMOVE), False, "workerNonce"),
    "outdata-removed": (_set("outData", _REMOVE), False, "no outData"),
    "outdata-empty": (_set("outData", []), False, "no outData"),
    "index-not-asked": (_set("outData/0/index", 7, sign=True), False, "not asked for"),
    "index-twice": (_set("outData/1/index", 0, sign=True), False, "twice"),
    "datahash-mismatch": (
        _set("outData/0/dataHash", "AB" * 32, sign=True),
        False,
        "dataHash",
    ),
    "session-iv-fallback": (_set("outData/0/iv", "", sign=True), False, "session IV"),
    "foreign-item-key": (
        _set("outData/0/encryptedDataEncryptionKey", "AB" * 20, sign=True),
        False,
        "data key",
    ),
    "index-not-int": (_set("outData/0/index", "0"), False, "malformed"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_verdicts_on_tampered_tcbridge_answers(
    name: str,
    processor: WorkOrderProcessor,
    worker_details: WorkerDetails,
    worker_keys: WorkerKeys,
) -> None:
    """The helper accepts only untampered answers (either s) to the order it sent."""
    tamper, accepted, words = TAMPERS[name]
    sent, response = sent_and_answer(processor, worker_details)

    verdict = verify_response(
        sent, tamper(copy.deepcopy(response), worker_keys), worker_details
    )

    assert verdict.accepted is accepted, verdict.reason
    assert words in verdict.reason
    if accepted:
        assert [o.data for o in verdict.outputs] == [
            b"RESULT: first",
            b"RESULT: second",
        ]


def test_error_response_gets_a_clear_verdict(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """An error answer is not accepted and its code and message are passed on."""
    sent = build_work_order(worker_details, "no-such-workload", [b"x"])

    outcome = processor.process(sent.request)
    verdict = verify_response(sent, outcome.response, worker_details)

    assert not verdict.accepted
    assert verdict.error is not None and verdict.error["code"] == outcome.status
    assert "names no workload" in verdict.reason


def test_attestation_hook(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """The attestation hook sees the worker's details and can veto the answer."""
    sent, response = sent_and_answer(processor, worker_details)
    seen: list[WorkerDetails] = []

    def accept(details: WorkerDetails) -> bool:
        seen.append(details)
        return True

    assert verify_response(sent, response, worker_details, attestation=accept).accepted
    assert seen == [worker_details]
    vetoed = verify_response(
        sent, response, worker_details, attestation=lambda d: False
    )
    assert not vetoed.accepted and "attestation" in vetoed.reason


def test_expected_indexes_can_be_exact(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """An explicit set of expected output indexes replaces the default."""
    sent, response = sent_and_answer(processor, worker_details)

    assert verify_response(
        sent, response, worker_details, expected_indexes={0, 1}
    ).accepted
    narrow = verify_response(sent, response, worker_details, expected_indexes={0})
    assert not narrow.accepted and "index 1" in narrow.reason


def test_decrypt_outputs(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """decrypt_outputs returns the plaintexts or raises for an answer that fails checks."""
    sent, response = sent_and_answer(
        processor, worker_details, out_slots=[OutputSlot(0, "item")]
    )

    outputs = decrypt_outputs(sent, response, worker_details)

    assert [o.data for o in outputs] == [b"RESULT: first", b"RESULT: second"]
    broken = json.loads(json.dumps(response))
    del broken["result"]["outData"]
    with pytest.raises(WorkOrderError, match="no outData"):
        decrypt_outputs(sent, broken, worker_details)


def test_avalon_style_round_trip(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """An Avalon-style order built by the helper is served and verified Avalon's way."""
    sent, response = sent_and_answer(processor, worker_details, style="avalon")

    verdict = verify_response(sent, response, worker_details)

    assert verdict.accepted, verdict.reason
    assert all(item["iv"] == "" for item in response["result"]["outData"])
