"""Interoperability with Hyperledger Avalon, driven by the shared vectors' index.json."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave_bridge import crypto
from enclave_bridge.eea import parse_request
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.processor import (
    STAGE_REQUESTER_SIGNATURE,
    ProcessorPolicy,
    ProcessOutcome,
    WorkOrderProcessor,
)
from enclave_bridge.requester import SentWorkOrder, WorkerDetails, verify_response
from enclave_bridge.workload import default_registry
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors

pytestmark = requires_vectors

CASES = vectors.case_ids()
SIGNED = [c for c in CASES if vectors.load_case(c).tags["requesterSigned"]]
PER_ITEM = [c for c in CASES if "perItemKeys" in vectors.load_case(c).secrets]
REQUEST_VARIANTS = vectors.variants("request") if CASES else []
RESPONSE_VARIANTS = vectors.variants("response") if CASES else []


def _ids(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{case}:{variant}" for case, variant in pairs]


# tcbridge's verdict for every tampered REQUEST kind, next to Avalon's.
# "reject" means the same stage as Avalon's C++ worker; "accept-unless-bound":
# accepted like Avalon while the requester id is unbound, refused at the
# requester-signature stage once the policy binds it to its key.
REQUEST_VERDICTS: dict[str, tuple[str, str]] = {
    "req-indata-byte-flip": ("reject", "same as Avalon"),
    "req-encrypted-request-hash-flip": ("reject", "same as Avalon"),
    "req-workorderid-changed": ("reject", "same as Avalon"),
    "req-session-key-swapped": ("reject", "same as Avalon"),
    "req-requester-signature-other-nonce": ("reject", "same as Avalon"),
    "req-indata-datahash-mismatch": ("reject", "same as Avalon"),
    "req-requester-signature-stripped": (
        "accept-unless-bound",
        "a bound requester id must sign; Avalon cannot bind ids to keys",
    ),
    "req-requester-resigned-other-key": (
        "accept-unless-bound",
        "a bound requester id ignores the request's own verifyingKey",
    ),
}

# tcbridge's requester helper verdict for every tampered RESPONSE kind.
RESPONSE_VERDICTS: dict[str, tuple[str, str]] = {
    "resp-outdata-byte-flip": ("reject", "same as Avalon"),
    "resp-signature-other-key": ("reject", "same as Avalon"),
    "resp-signature-bit-flip": ("reject", "same as Avalon"),
    "resp-signature-missing": ("reject", "same as Avalon"),
    "resp-workorderid-changed": ("reject", "same as Avalon"),
    "resp-requesterid-changed": ("reject", "same as Avalon"),
    "resp-workernonce-changed": ("reject", "same as Avalon"),
    "resp-outdata-datahash-mismatch": ("reject", "same as Avalon"),
    "resp-cpp-worker-raw-concat": ("reject", "same as Avalon"),
    "resp-signature-high-s": (
        "accept",
        "same as Avalon: off-chain verifiers accept high s",
    ),
    "resp-outdata-removed": (
        "reject",
        "Avalon's client crashes; we answer 'no outData'",
    ),
    "resp-outdata-index-changed": (
        "reject",
        "Avalon accepts; index 7 was never asked for",
    ),
    "resp-id-boundary-shift": (
        "reject",
        "Avalon accepts; the ids differ from those sent",
    ),
}


# --- an independent model of Avalon's client, from the README's recipe -----


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def avalon_response_hash(result: dict[str, Any]) -> bytes:
    """worker_hash.calculate_response_hash; raises where Avalon's client raises."""
    head = (
        result["workerNonce"]
        + result["workOrderId"]
        + result["workerId"]
        + result["workloadId"]
        + result["requesterId"]
    )
    items = result.get("outData")
    if not items:
        raise TypeError("can't concat str to bytes")
    concat = "".join(
        item.get("dataHash", "")
        + item.get("data", "")
        + item.get("encryptedDataEncryptionKey", "")
        + item.get("iv", "")
        for item in sorted(items, key=lambda i: i["index"])
    )
    return _sha(_sha(head.encode()) + _sha(concat.encode()))


def avalon_client_verify(response: dict[str, Any]) -> str:
    """'accept', 'reject' or 'error', as WorkerSign.verify_signature would answer."""
    result = response["result"]
    try:
        digest = avalon_response_hash(result)
    except (KeyError, TypeError):
        return "error"
    signature = result.get("workerSignature")
    if not signature:
        return "reject"
    pem = vectors.worker()["workerRetrieveResponse"]["result"]["details"][
        "workerTypeData"
    ]
    key = serialization.load_pem_public_key(pem["verificationKey"].encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    try:
        key.verify(
            base64.b64decode(signature), digest, ec.ECDSA(Prehashed(hashes.SHA256()))
        )
    except (InvalidSignature, ValueError):
        return "reject"
    return "accept"


def avalon_decrypt(case: vectors.Case, result: dict[str, Any]) -> list[bytes]:
    """Outputs as Avalon's client reads them: session key and session IV, or '-'."""
    key = bytes.fromhex(case.secrets["sessionKeyHex"])
    iv = bytes.fromhex(case.secrets["sessionKeyIvHex"])
    out = []
    for item in result["outData"]:
        raw = base64.b64decode(item["data"])
        if item.get("encryptedDataEncryptionKey") == "-":
            out.append(raw)
        else:
            out.append(AESGCM(key).decrypt(iv, raw, None))
    return out


# --- the processor over every case -----------------------------------------


@pytest.fixture(scope="module")
def outcomes() -> dict[str, ProcessOutcome]:
    """Each case on a fresh worker state, as expected.json assumes."""
    keys = vectors.worker_keys()
    processor = WorkOrderProcessor({keys.worker_id: keys}, default_registry())
    return {
        case.id: processor.process(
            case.fresh_request(), state=None, rng=vectors.nonce_rng(case)
        )
        for case in vectors.cases()
    }


def test_index_lists_every_case_folder() -> None:
    """index.json and the cases folder name the same cases."""
    on_disk = sorted(p.name for p in (vectors.vectors_dir() / "cases").iterdir())

    assert sorted(CASES) == on_disk


@pytest.mark.parametrize("case_id", CASES)
def test_request_hashes_match(case_id: str) -> None:
    """Every request-side hash in hashes.json is what tcbridge computes."""
    case = vectors.load_case(case_id)
    expected = case.hashes["request"]
    parts = crypto.request_hash_parts(parse_request(case.request))

    assert parts.hash1_input == expected["hash1Input"]
    assert parts.hash1.hex() == expected["hash1"]
    assert parts.in_data_concat == expected["inDataConcat"]
    assert parts.in_data_hash.hex() == expected["inDataHash"]
    assert parts.out_data_concat == expected["outDataConcat"]
    out_hash = parts.out_data_hash.hex() if parts.out_data_hash else None
    assert out_hash == expected["outDataHash"]
    assert parts.final_input.hex() == expected["finalHashInputHex"]
    assert parts.request_hash.hex() == expected["requestHash"]


@pytest.mark.parametrize("case_id", CASES)
def test_response_hashes_match(case_id: str) -> None:
    """Every response-side hash in hashes.json is what tcbridge computes."""
    case = vectors.load_case(case_id)
    expected = case.hashes["response"]
    result = case.response["result"]
    items = [crypto_item(item) for item in result["outData"]]
    nonce_bytes = bytes.fromhex(expected["workerNonceRandomHex"])

    assert crypto.worker_nonce(lambda n: nonce_bytes) == result["workerNonce"]
    assert crypto.array_concat(items) == expected["outDataConcat"]
    assert crypto.array_digest(items).hex() == expected["outDataHash"]
    digest = crypto.response_hash(
        result["workerNonce"],
        result["workOrderId"],
        result["workerId"],
        result["workloadId"],
        result["requesterId"],
        items,
    )
    assert digest.hex() == expected["responseHash"]
    der = base64.b64decode(result["workerSignature"])
    assert der.hex() == expected["workerSignatureDerHex"]
    assert crypto.is_low_s(der) is expected["workerSignatureLowS"] is True
    assert crypto.verify_digest(vectors.worker_verifying_key(), digest, der)


def crypto_item(raw: dict[str, Any]) -> Any:
    from enclave_bridge.eea import ResponseItem

    return ResponseItem(
        raw["index"],
        raw["dataHash"],
        raw["data"],
        raw["encryptedDataEncryptionKey"],
        raw["iv"],
    )


@pytest.mark.parametrize("case_id", CASES)
def test_encrypted_session_key_reproduced_from_seed(case_id: str) -> None:
    """With the OAEP seed, SHA-1 RSA-OAEP reproduces encryptedSessionKey byte for byte."""
    case = vectors.load_case(case_id)
    public = vectors.worker_keys().encryption_key.public_key()
    wrapped = crypto.rsa_wrap(
        public,
        bytes.fromhex(case.secrets["sessionKeyHex"]),
        crypto.OaepHash.SHA1,
        seed=bytes.fromhex(case.secrets["rsaOaepSeedHex"]),
    )

    assert wrapped.hex().upper() == case.request["params"]["encryptedSessionKey"]


@pytest.mark.parametrize("case_id", CASES)
def test_encrypted_request_hash_and_nonce_reuse(case_id: str) -> None:
    """encryptedRequestHash is GCM under the session IV, so its keystream is public."""
    case = vectors.load_case(case_id)
    key = bytes.fromhex(case.secrets["sessionKeyHex"])
    iv = bytes.fromhex(case.secrets["sessionKeyIvHex"])
    request_hash = bytes.fromhex(case.hashes["request"]["requestHash"])
    sent = bytes.fromhex(case.request["params"]["encryptedRequestHash"])

    assert crypto.gcm_encrypt(key, iv, request_hash) == sent
    keystream = bytes(a ^ b for a, b in zip(sent[:32], request_hash, strict=True))
    assert keystream.hex() == case.hashes["gcmNonceReuse"]["keystreamPrefixHex"]


@pytest.mark.parametrize("case_id", SIGNED)
def test_requester_signature_matches(case_id: str) -> None:
    """The requester signature is DER over the request hash and verifies."""
    case = vectors.load_case(case_id)
    params = case.request["params"]
    der = base64.b64decode(params["requesterSignature"])
    digest = bytes.fromhex(case.hashes["request"]["requestHash"])

    assert der.hex() == case.hashes["request"]["requesterSignatureDerHex"]
    assert crypto.is_low_s(der) is case.hashes["request"]["requesterSignatureLowS"]
    assert crypto.verify_digest(
        crypto.load_verifying_key(params["verifyingKey"]), digest, der
    )


@pytest.mark.parametrize("case_id", CASES)
def test_processor_answers_as_avalon_expects(
    case_id: str, outcomes: dict[str, ProcessOutcome]
) -> None:
    """The processor's response verifies with Avalon's recipe and decrypts to expected.json."""
    case = vectors.load_case(case_id)
    outcome = outcomes[case_id]
    expected_outputs = [bytes.fromhex(o["hex"]) for o in case.expected["outputs"]]

    assert outcome.status == 0, outcome.response
    assert outcome.request_hash is not None
    assert outcome.request_hash.hex() == case.hashes["request"]["requestHash"]
    result = outcome.response["result"]
    assert outcome.response["id"] == case.request["id"]
    assert avalon_client_verify(outcome.response) == "accept"
    assert avalon_decrypt(case, result) == expected_outputs
    assert [item["index"] for item in result["outData"]] == [
        o["index"] for o in case.expected["outputs"]
    ]
    # Same worker nonce bytes, Avalon-style IVs: the same response hash.
    assert avalon_response_hash(result).hex() == case.hashes["response"]["responseHash"]
    assert crypto.is_low_s(base64.b64decode(result["workerSignature"]))


@pytest.mark.parametrize("case_id", CASES)
def test_vector_response_verifies_with_requester_helper(
    case_id: str, worker_details: WorkerDetails
) -> None:
    """Every response.json passes tcbridge's requester checks and decrypts to expected.json."""
    case = vectors.load_case(case_id)
    sent = SentWorkOrder.from_request(
        case.request, bytes.fromhex(case.secrets["sessionKeyHex"])
    )

    verdict = verify_response(sent, case.response, worker_details)

    assert verdict.accepted, verdict.reason
    assert [o.data for o in verdict.outputs] == [
        bytes.fromhex(o["hex"]) for o in case.expected["outputs"]
    ]


def test_every_tampered_kind_has_a_verdict() -> None:
    """The verdict tables cover every variant kind the vectors hold."""
    assert {v for _, v in REQUEST_VARIANTS} == set(REQUEST_VERDICTS)
    assert {v for _, v in RESPONSE_VARIANTS} == set(RESPONSE_VERDICTS)


@pytest.mark.parametrize(
    ("case_id", "variant_id"), REQUEST_VARIANTS, ids=_ids(REQUEST_VARIANTS)
)
def test_tampered_request(
    case_id: str, variant_id: str, worker_keys: WorkerKeys
) -> None:
    """Each tampered request gets tcbridge's verdict from the table, at Avalon's stage."""
    case = vectors.load_case(case_id)
    variant = vectors.variant(case_id, variant_id)
    patched = vectors.apply_patch(case.request, variant["patch"])
    expected = variant["expected"]
    verdict, _ = REQUEST_VERDICTS[variant_id]
    processor = WorkOrderProcessor(
        {worker_keys.worker_id: worker_keys}, default_registry()
    )

    outcome = processor.process(patched, rng=vectors.nonce_rng(case))

    if expected["avalonWorkerVerdict"] == "reject":
        assert verdict == "reject"
        assert outcome.status != 0
        assert outcome.stage == expected["stage"], outcome.response
        assert (
            outcome.response["error"]["data"]["workOrderId"]
            == (patched["params"]["workOrderId"])
        )
        return
    assert verdict == "accept-unless-bound"
    assert outcome.status == 0
    bound = WorkOrderProcessor(
        {worker_keys.worker_id: worker_keys},
        default_registry(),
        ProcessorPolicy(
            requester_keys={
                case.request["params"]["requesterId"]: case.request["params"][
                    "verifyingKey"
                ].encode()
            }
        ),
    )
    refused = bound.process(patched)
    assert refused.stage == STAGE_REQUESTER_SIGNATURE
    assert bound.process(case.fresh_request()).status == 0


@pytest.mark.parametrize(
    ("case_id", "variant_id"), RESPONSE_VARIANTS, ids=_ids(RESPONSE_VARIANTS)
)
def test_tampered_response(
    case_id: str, variant_id: str, worker_details: WorkerDetails
) -> None:
    """Avalon's client model gives the vectors' verdict; tcbridge's helper gives the table's."""
    case = vectors.load_case(case_id)
    variant = vectors.variant(case_id, variant_id)
    patched = vectors.apply_patch(case.response, variant["patch"])
    sent = SentWorkOrder.from_request(
        case.request, bytes.fromhex(case.secrets["sessionKeyHex"])
    )
    verdict, _ = RESPONSE_VERDICTS[variant_id]

    assert avalon_client_verify(patched) == variant["expected"]["avalonClientVerify"]
    ours = verify_response(sent, patched, worker_details)
    assert ours.accepted is (verdict == "accept"), ours.reason
    if variant_id == "resp-outdata-removed":
        assert "no outData" in ours.reason


@pytest.mark.parametrize("case_id", SIGNED)
def test_high_s_requester_signature_accepted(
    case_id: str, worker_keys: WorkerKeys
) -> None:
    """The high-s twin of a requester signature is accepted, as Avalon's requesters need."""
    case = vectors.load_case(case_id)
    request = case.fresh_request()
    der = base64.b64decode(request["params"]["requesterSignature"])
    twin = crypto.flip_s(der)
    request["params"]["requesterSignature"] = base64.b64encode(twin).decode()
    processor = WorkOrderProcessor(
        {worker_keys.worker_id: worker_keys}, default_registry()
    )

    assert crypto.is_low_s(der) != crypto.is_low_s(twin)
    outcome = processor.process(request, state=None)
    assert outcome.status == 0, outcome.response


@pytest.mark.parametrize("case_id", PER_ITEM)
def test_per_item_data_keys(case_id: str, worker_keys: WorkerKeys) -> None:
    """A per-item key unwraps (IV ‖ GCM(session, OAEP(key)) ‖ tag) and opens its item."""
    case = vectors.load_case(case_id)
    session_key = bytes.fromhex(case.secrets["sessionKeyHex"])
    for where, secret in case.secrets["perItemKeys"].items():
        position = int(where.removeprefix("inData[").removesuffix("]"))
        item = case.request["params"]["inData"][position]
        wrapped = bytes.fromhex(item["encryptedDataEncryptionKey"])

        assert wrapped[:12].hex() == secret["wrappedKeyIvHex"]
        key = crypto.unwrap_item_key(
            worker_keys.encryption_key, session_key, wrapped, crypto.OaepHash.SHA1
        )
        assert key.hex() == secret["dataKeyHex"]
        assert item["iv"].lower() == secret["dataIvHex"]
        plaintext = crypto.gcm_decrypt(
            key, bytes.fromhex(item["iv"]), base64.b64decode(item["data"])
        )
        expected = next(
            i for i in case.expected["inputs"] if i["index"] == item["index"]
        )
        assert plaintext.hex() == expected["hex"]


def test_stateful_cases_thread_state_in_index_order(worker_keys: WorkerKeys) -> None:
    """Run in order on one fresh state, the heart cases accumulate every evaluation."""
    processor = WorkOrderProcessor(
        {worker_keys.worker_id: worker_keys}, default_registry()
    )
    stateful = [case for case in vectors.cases() if case.tags["stateful"]]
    state = None
    last: ProcessOutcome | None = None
    for case in stateful:
        last = processor.process(case.fresh_request(), state=state)
        assert last.status == 0
        state = last.new_state

    # av16 47%, av17 71%, av18 invalid (not counted), av19 36% and 35%.
    assert state == {"totalRisk": 47 + 71 + 36 + 35, "count": 4}
    assert last is not None and stateful[-1].id.startswith("av19")
    sent = SentWorkOrder.from_request(
        stateful[-1].request, bytes.fromhex(stateful[-1].secrets["sessionKeyHex"])
    )
    verdict = verify_response(
        sent, last.response, WorkerDetails.from_json(vectors.worker())
    )
    assert [o.data for o in verdict.outputs] == [
        b"Heart disease risk is 47% for 4 people"
    ]
