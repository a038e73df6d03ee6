"""The work-order processor: styles, policy, outcomes, on-chain signatures."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import coincurve
import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from eth_utils.crypto import keccak

from enclave_bridge import crypto
from enclave_bridge.eea import EeaError, parse_request
from enclave_bridge.errors import ConfigurationError
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.processor import (
    EthereumTarget,
    FabricTarget,
    ProcessorPolicy,
    WorkOrderProcessor,
)
from enclave_bridge.requester import (
    InputItem,
    OutputSlot,
    SentWorkOrder,
    WorkerDetails,
    build_work_order,
    verify_response,
)
from enclave_bridge.result_signature import (
    EthereumDomain,
    FabricDomain,
    fabric_digest,
    recover_eip712_signer,
)
from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadFailed,
    WorkloadInput,
    WorkloadOutput,
    WorkloadRegistry,
    WorkloadResult,
    default_registry,
)
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors

pytestmark = requires_vectors

REQUESTER_KEY = bytes.fromhex("11" * 32)
OTHER_KEY = bytes.fromhex("22" * 32)


def order(
    details: WorkerDetails, *inputs: bytes | InputItem, **kwargs: Any
) -> SentWorkOrder:
    kwargs.setdefault("requester_key", REQUESTER_KEY)
    kwargs.setdefault("rng", vectors.fixed_rng(repr(inputs).encode()))
    return build_work_order(details, "echo-result", list(inputs or [b"hi"]), **kwargs)


def reseal(
    sent: SentWorkOrder, change: Callable[[dict[str, Any]], None]
) -> SentWorkOrder:
    """Change a request's params, then redo its request hash and signature."""
    request = json.loads(json.dumps(sent.request))
    params = request["params"]
    change(params)
    digest = crypto.request_hash(parse_request(params))
    iv = bytes.fromhex(params["sessionKeyIv"])
    params["encryptedRequestHash"] = (
        crypto.gcm_encrypt(sent.session_key, iv, digest).hex().upper()
    )
    if params.get("requesterSignature"):
        params["requesterSignature"] = crypto.sign_digest_b64(REQUESTER_KEY, digest)
    return SentWorkOrder(request, sent.session_key, sent.slot_keys)


@dataclass
class Scripted:
    """A test workload whose behaviour is a function."""

    name: str
    behaviour: Callable[[Sequence[WorkloadInput], WorkloadContext], Any]
    stateful: bool = False
    runs: int = 0

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        self.runs += 1
        result: WorkloadResult = self.behaviour(inputs, ctx)
        return result


def _raise(exc: Exception) -> Callable[..., Any]:
    def behaviour(*_: Any) -> Any:
        raise exc

    return behaviour


def test_tcbridge_order_round_trip(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """A tcbridge-style order is answered, verifies and decrypts."""
    sent = order(worker_details, b"one", b"two")

    outcome = processor.process(sent.request)

    assert outcome.status == 0, outcome.response
    assert outcome.stage is None
    verdict = verify_response(sent, outcome.response, worker_details)
    assert verdict.accepted, verdict.reason
    assert [o.data for o in verdict.outputs] == [b"RESULT: one", b"RESULT: two"]
    assert outcome.request_hash == sent.request_hash


def test_tcbridge_answer_has_fresh_iv_per_output(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """Each output of a tcbridge-style answer has its own IV, never the session IV."""
    sent = order(worker_details, b"a", b"b", b"c")

    items = processor.process(sent.request).response["result"]["outData"]

    ivs = [item["iv"] for item in items]
    assert all(len(iv) == 24 for iv in ivs)
    in_ivs = {item["iv"] for item in sent.params["inData"]}
    assert len(set(ivs) | in_ivs | {sent.params["sessionKeyIv"]}) == 7


def test_avalon_style_answer_uses_session_iv(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """An Avalon-style order is answered under the session IV, as Avalon's client reads."""
    sent = order(worker_details, b"legacy", style="avalon")

    outcome = processor.process(sent.request)

    item = outcome.response["result"]["outData"][0]
    assert item["iv"] == ""
    raw = base64.b64decode(item["data"])
    assert (
        crypto.gcm_decrypt(sent.session_key, sent.session_iv, raw) == b"RESULT: legacy"
    )
    assert "keyEncryptionAlgorithm" not in sent.params


def test_sha1_refused_when_disabled(
    make_processor: Callable[..., WorkOrderProcessor], worker_details: WorkerDetails
) -> None:
    """With SHA-1 OAEP disabled an Avalon order is refused as unsupported; tcbridge's passes."""
    processor = make_processor(ProcessorPolicy(allow_sha1_oaep=False))
    avalon = vectors.load_case(vectors.case_ids()[1]).fresh_request()

    refused = processor.process(avalon)

    assert refused.status == EeaError.UNSUPPORTED_MODE
    assert refused.stage == "policy"
    assert "SHA-1" in refused.response["error"]["message"]
    assert processor.process(order(worker_details).request).status == 0


def test_iv_reuse_refused_when_disabled(
    make_processor: Callable[..., WorkOrderProcessor], worker_details: WorkerDetails
) -> None:
    """With IV reuse disabled an Avalon order gets an error result that says why."""
    processor = make_processor(ProcessorPolicy(allow_iv_reuse=False))

    refused = processor.process(order(worker_details, style="avalon").request)

    assert refused.status == EeaError.UNSUPPORTED_MODE
    assert "IV reuse" in refused.response["error"]["message"]
    assert processor.process(order(worker_details).request).status == 0


def test_tcbridge_item_without_iv_refused_when_iv_reuse_disabled(
    make_processor: Callable[..., WorkOrderProcessor], worker_details: WorkerDetails
) -> None:
    """A tcbridge item that falls back to the session IV is refused when reuse is off."""
    sent = order(worker_details, b"x")

    def use_session_iv(params: dict[str, Any]) -> None:
        item = params["inData"][0]
        del item["iv"]
        sealed = crypto.gcm_encrypt(
            sent.session_key, bytes.fromhex(params["sessionKeyIv"]), b"x"
        )
        item["data"] = base64.b64encode(sealed).decode()

    fallback = reseal(sent, use_session_iv)

    assert make_processor().process(fallback.request).status == 0
    refused = make_processor(ProcessorPolicy(allow_iv_reuse=False)).process(
        fallback.request
    )
    assert refused.stage == "policy"
    assert "session IV" in refused.response["error"]["message"]


def test_repeated_item_iv_refused_when_iv_reuse_disabled(
    make_processor: Callable[..., WorkOrderProcessor], worker_details: WorkerDetails
) -> None:
    """Two session-key items under one IV are refused when reuse is off."""
    sent = order(worker_details, b"x", b"y")

    def share_iv(params: dict[str, Any]) -> None:
        first, second = params["inData"]
        second["iv"] = first["iv"]
        sealed = crypto.gcm_encrypt(sent.session_key, bytes.fromhex(first["iv"]), b"y")
        second["data"] = base64.b64encode(sealed).decode()

    shared = reseal(sent, share_iv)

    assert make_processor().process(shared.request).status == 0
    refused = make_processor(ProcessorPolicy(allow_iv_reuse=False)).process(
        shared.request
    )
    assert refused.stage == "policy"
    assert "repeats an IV" in refused.response["error"]["message"]


def test_bound_requester_key_is_enforced(
    make_processor: Callable[..., WorkOrderProcessor], worker_details: WorkerDetails
) -> None:
    """A bound requester id must be signed with its key; the request's verifyingKey is ignored."""
    requester_id = "ab" * 32
    bound_key = coincurve.PrivateKey(REQUESTER_KEY).public_key.format()
    processor = make_processor(
        ProcessorPolicy(requester_keys={requester_id.upper(): bound_key})
    )

    good = order(worker_details, requester_id=requester_id)
    other = order(worker_details, requester_id=requester_id, requester_key=OTHER_KEY)
    unsigned = order(worker_details, requester_id=requester_id, requester_key=None)
    unbound = order(worker_details, requester_key=OTHER_KEY)

    assert processor.process(good.request).status == 0
    for refused in (
        processor.process(other.request),
        processor.process(unsigned.request),
    ):
        assert refused.status == EeaError.ACCESS_DENIED
        assert refused.stage == "requester_signature"
    assert processor.process(unbound.request).status == 0


def test_bad_requester_signature_refused(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """A signature by another key than the request's verifyingKey is an invalid signature."""
    sent = order(worker_details)
    request = json.loads(json.dumps(sent.request))
    digest = sent.request_hash
    request["params"]["requesterSignature"] = crypto.sign_digest_b64(OTHER_KEY, digest)

    outcome = processor.process(request)

    assert outcome.status == EeaError.INVALID_SIGNATURE
    assert outcome.stage == "requester_signature"


ETH_DOMAIN = EthereumDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
FABRIC_DOMAIN = FabricDomain("mychannel", "workorders")


def eth_target() -> EthereumTarget:
    return EthereumTarget(ETH_DOMAIN, keccak(b"order"), keccak(b"request bytes"))


def fabric_target() -> FabricTarget:
    return FabricTarget(FABRIC_DOMAIN, "wo-1", crypto.sha256(b"request bytes"))


@pytest.mark.parametrize("kind", ["result", "error", "unparseable"])
def test_ethereum_result_signature(
    kind: str,
    processor: WorkOrderProcessor,
    worker_details: WorkerDetails,
    worker_keys: WorkerKeys,
) -> None:
    """Results and error results carry an EIP-712 signature the contract's rule accepts."""
    sent = order(worker_details)
    request: Any = sent.request
    if kind == "error":
        request = json.loads(json.dumps(sent.request))
        request["params"]["workOrderId"] = "00" * 32
    elif kind == "unparseable":
        request = b"{not json"
    target = eth_target()

    outcome = processor.process(request, target=target)

    assert (outcome.status == 0) is (kind == "result")
    assert outcome.result_signature is not None
    signer = recover_eip712_signer(
        outcome.result_signature,
        ETH_DOMAIN,
        target.order_key,
        target.request_hash,
        keccak(outcome.response_bytes),
        outcome.status,
    )
    assert signer == worker_keys.signing_address


@pytest.mark.parametrize("kind", ["result", "error"])
def test_fabric_result_signature(
    kind: str,
    processor: WorkOrderProcessor,
    worker_details: WorkerDetails,
    worker_keys: WorkerKeys,
) -> None:
    """Results and error results carry a Fabric signature that verifies with the worker key."""
    request = order(worker_details).request
    if kind == "error":
        request = json.loads(json.dumps(request))
        request["params"]["encryptedRequestHash"] = "00" * 48
    target = fabric_target()

    outcome = processor.process(request, target=target)

    assert (outcome.status == 0) is (kind == "result")
    assert outcome.result_signature is not None
    digest = fabric_digest(
        FABRIC_DOMAIN,
        "wo-1",
        target.request_hash,
        crypto.sha256(outcome.response_bytes),
        outcome.status,
    )
    assert crypto.is_low_s(outcome.result_signature)
    assert worker_keys.verifying_key.verify(
        outcome.result_signature, digest, hasher=None
    )


def test_no_target_no_result_signature(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """Without a target there is nothing to sign on-chain."""
    assert processor.process(order(worker_details).request).result_signature is None


def test_response_bytes_are_compact_json(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """response_bytes is the compact JSON of response, result fields in Avalon's order."""
    outcome = processor.process(order(worker_details).request)

    assert json.loads(outcome.response_bytes) == outcome.response
    assert b" " not in outcome.response_bytes
    assert list(outcome.response["result"]) == [
        "workOrderId",
        "workloadId",
        "workerId",
        "requesterId",
        "workerNonce",
        "workerSignature",
        "outData",
    ]


def test_duplicate_request_is_not_run(
    worker_keys: WorkerKeys, worker_details: WorkerDetails
) -> None:
    """claim_request False gives a 'duplicate request' error and the workload never runs."""
    echo = Scripted(
        "echo-result", lambda inputs, ctx: WorkloadResult([WorkloadOutput(0, b"ran")])
    )
    registry = WorkloadRegistry()
    registry.register(echo)
    processor = WorkOrderProcessor({worker_keys.worker_id: worker_keys}, registry)
    sent = order(worker_details)
    claimed: list[bytes] = []

    def claim(request_hash: bytes) -> bool:
        claimed.append(request_hash)
        return len(claimed) == 1

    first = processor.process(sent.request, claim_request=claim)
    second = processor.process(sent.request, claim_request=claim)

    assert first.status == 0
    assert second.stage == "duplicate"
    assert "duplicate request" in second.response["error"]["message"]
    assert claimed == [sent.request_hash, sent.request_hash]
    assert echo.runs == 1


def test_claim_not_called_for_a_refused_request(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """A request that fails verification never reaches claim_request."""
    request = json.loads(json.dumps(order(worker_details).request))
    request["params"]["requesterNonce"] = "00" * 16
    calls: list[bytes] = []

    def claim(request_hash: bytes) -> bool:
        calls.append(request_hash)
        return True

    outcome = processor.process(request, claim_request=claim)

    assert outcome.stage == "request_hash"
    assert calls == []


@pytest.mark.parametrize(
    ("behaviour", "code", "message"),
    [
        (
            _raise(RuntimeError("boom")),
            EeaError.UNKNOWN_ERROR,
            "workload echo-result failed",
        ),
        (
            _raise(WorkloadFailed("no such city")),
            EeaError.UNKNOWN_ERROR,
            "no such city",
        ),
        (lambda i, c: "not a result", EeaError.UNKNOWN_ERROR, "malformed result"),
        (
            lambda i, c: WorkloadResult([WorkloadOutput(0, "str")]),  # type: ignore[arg-type]
            1,
            "malformed result",
        ),
        (lambda i, c: WorkloadResult([]), 1, "malformed result"),
        (
            lambda i, c: WorkloadResult([WorkloadOutput(-1, b"x")]),
            1,
            "malformed result",
        ),
        (
            lambda i, c: WorkloadResult([WorkloadOutput(0, b"x")], new_state=[1]),  # type: ignore[arg-type]
            1,
            "malformed",
        ),
    ],
    ids=[
        "raises",
        "refuses",
        "not-a-result",
        "str-data",
        "no-output",
        "bad-index",
        "bad-state",
    ],
)
def test_workload_misbehaviour_is_an_error_result(
    behaviour: Callable[..., Any],
    code: int,
    message: str,
    worker_keys: WorkerKeys,
    worker_details: WorkerDetails,
) -> None:
    """A workload that raises or returns garbage yields an error result, never an exception."""
    registry = WorkloadRegistry()
    registry.register(Scripted("echo-result", behaviour))
    processor = WorkOrderProcessor({worker_keys.worker_id: worker_keys}, registry)

    outcome = processor.process(order(worker_details).request)

    assert outcome.status == code
    assert outcome.stage == "workload"
    assert message in outcome.response["error"]["message"]
    assert outcome.new_state is None


def test_unknown_worker_and_workload(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """An order for another worker or an unknown workload gets an error result."""
    other = WorkerDetails(
        "cd" * 32,
        worker_details.encryption_key_pem,
        worker_details.verification_key_pem,
    )
    unknown_worker = processor.process(order(other).request)
    unknown_workload = processor.process(
        build_work_order(
            worker_details, "no-such-workload", [b"x"], rng=vectors.fixed_rng()
        ).request
    )

    assert unknown_worker.status == EeaError.INVALID_PARAMETER
    assert "workerId" in unknown_worker.response["error"]["message"]
    assert unknown_workload.stage == "workload"
    assert "names no workload" in unknown_workload.response["error"]["message"]


def test_accepts_bytes_and_bare_params(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """The request may be JSON-RPC bytes, a JSON-RPC object or its params alone."""
    sent = order(worker_details)

    as_bytes = processor.process(json.dumps(sent.request).encode())
    as_params = processor.process(sent.request["params"])

    assert as_bytes.status == as_params.status == 0
    assert as_bytes.response["id"] == sent.request["id"]
    assert as_params.response["id"] is None


def test_output_placement_into_slots(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """Output i goes into the i-th outData slot, the rest into new items at their index."""
    sent = order(
        worker_details,
        InputItem(b"a", index=0),
        InputItem(b"b", index=1),
        InputItem(b"c", index=2),
        out_slots=[OutputSlot(10, "plain"), OutputSlot(11, "item")],
    )

    outcome = processor.process(sent.request)
    verdict = verify_response(sent, outcome.response, worker_details)

    items = outcome.response["result"]["outData"]
    assert [item["index"] for item in items] == [10, 11, 2]
    assert items[0]["encryptedDataEncryptionKey"] == "-"
    assert base64.b64decode(items[0]["data"]) == b"RESULT: a"
    assert (
        items[1]["encryptedDataEncryptionKey"]
        == sent.params["outData"][1]["encryptedDataEncryptionKey"]
    )
    assert items[1]["iv"] != sent.params["outData"][1]["iv"]
    assert verdict.accepted, verdict.reason
    assert [o.data for o in verdict.outputs] == [
        b"RESULT: a",
        b"RESULT: b",
        b"RESULT: c",
    ]


def test_heart_state_in_and_out(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """The state given is what the workload sees; its new state comes back to commit."""
    sent = build_work_order(
        worker_details, "heart-disease-eval", [b"aggregate"], rng=vectors.fixed_rng()
    )

    outcome = processor.process(sent.request, state={"totalRisk": 90, "count": 2})
    verdict = verify_response(sent, outcome.response, worker_details)

    assert outcome.new_state == {"totalRisk": 90, "count": 2}
    assert [o.data for o in verdict.outputs] == [
        b"Heart disease risk is 45% for 2 people"
    ]


def test_worker_encryption_key_must_be_ours(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """An order naming another encryption key is refused before any RSA work."""
    other_pem = rsa.generate_private_key(65537, 2048).public_key()
    from cryptography.hazmat.primitives import serialization

    pem = other_pem.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sent = reseal(
        order(worker_details), lambda p: p.update(workerEncryptionKey=pem.hex())
    )

    outcome = processor.process(sent.request)

    assert outcome.stage == "parse"
    assert "workerEncryptionKey" in outcome.response["error"]["message"]


class CountingKey:
    """Wraps an RSA private key and counts its decryptions."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        self.decrypts = 0

    def decrypt(self, ciphertext: bytes, pad: padding.AsymmetricPadding) -> bytes:
        self.decrypts += 1
        return self.key.decrypt(ciphertext, pad)

    def public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()


@pytest.mark.parametrize(
    ("inputs", "slots", "expected"),
    [
        ([b"a", b"b", b"c"], [], 1),
        ([InputItem(b"a", "item"), b"b"], [], 2),
        ([InputItem(b"a", "item")], [OutputSlot(0, "item")], 3),
    ],
    ids=["session-only", "one-item-key", "item-key-slot"],
)
def test_rsa_operations_per_order(
    inputs: list[Any],
    slots: list[OutputSlot],
    expected: int,
    worker_keys: WorkerKeys,
    worker_details: WorkerDetails,
) -> None:
    """One RSA decryption per order, plus one per per-item key."""
    counting = CountingKey(worker_keys.encryption_key)
    keys = WorkerKeys(worker_keys.worker_id, worker_keys.signing_key, counting)  # type: ignore[arg-type]
    processor = WorkOrderProcessor({keys.worker_id: keys}, default_registry())

    outcome = processor.process(order(worker_details, *inputs, out_slots=slots).request)

    assert outcome.status == 0, outcome.response
    assert counting.decrypts == expected


def test_every_unwrap_failure_looks_the_same(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """Wrong length, wrong padding hash, garbage and a short key all give one code and message."""
    sent = order(worker_details)
    public = worker_details.encryption_key()
    variants = {
        "short": "00" * 16,
        "garbage": "7F" * 384,
        "sha1-wrapped": crypto.rsa_wrap(
            public, sent.session_key, crypto.OaepHash.SHA1
        ).hex(),
        "short-key": crypto.rsa_wrap(public, b"k" * 16, crypto.OaepHash.SHA256).hex(),
    }
    answers = set()
    for value in variants.values():
        request = json.loads(json.dumps(sent.request))
        request["params"]["encryptedSessionKey"] = value
        outcome = processor.process(request)
        assert outcome.stage == "session_key"
        error = outcome.response["error"]
        answers.add((error["code"], error["message"]))

    assert len(answers) == 1


def test_bad_bound_key_is_a_configuration_error(worker_keys: WorkerKeys) -> None:
    """A policy binding a requester to something that is not a key fails at start."""
    policy = ProcessorPolicy(requester_keys={"aa": b"not a key"})

    with pytest.raises(ConfigurationError, match="requester_keys"):
        WorkOrderProcessor(
            {worker_keys.worker_id: worker_keys}, default_registry(), policy
        )


def test_several_workers_and_an_unknown_one(
    worker_keys: WorkerKeys, worker_details: WorkerDetails
) -> None:
    """With several identities, an order for an unknown worker gets no on-chain signature."""
    other = WorkerKeys("cd" * 32, bytes.fromhex("77" * 32), worker_keys.encryption_key)
    processor = WorkOrderProcessor(
        {worker_keys.worker_id.upper(): worker_keys, other.worker_id: other},
        default_registry(),
    )
    stranger = WorkerDetails(
        "ef" * 32,
        worker_details.encryption_key_pem,
        worker_details.verification_key_pem,
    )

    served = processor.process(order(worker_details).request, target=eth_target())
    refused = processor.process(order(stranger).request, target=eth_target())

    assert served.status == 0 and served.result_signature is not None
    assert refused.status == EeaError.INVALID_PARAMETER
    assert refused.result_signature is None


def test_lone_surrogates_in_echoed_strings(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """Strings with no UTF-8 form, echoed in an answer, still give valid JSON bytes."""
    request = json.loads(json.dumps(order(worker_details).request))
    request["id"] = "\udfff"
    served = processor.process(request)
    request["params"]["workOrderId"] = "\ud800"
    refused = processor.process(request, target=eth_target())

    assert served.status == 0
    assert json.loads(served.response_bytes)["id"] == "\udfff"
    assert refused.status == EeaError.INVALID_PARAMETER
    assert (
        json.loads(refused.response_bytes)["error"]["data"]["workOrderId"] == "\ud800"
    )
    assert refused.result_signature is not None
