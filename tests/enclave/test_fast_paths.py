"""The processor's shortcuts answer exactly as the slow paths they replaced."""

from __future__ import annotations

import json
import os
from typing import Any

import coincurve
import pytest
from cryptography.hazmat.primitives import serialization
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from enclave_bridge import crypto, eea
from enclave_bridge import processor as processor_module
from enclave_bridge.errors import WorkOrderError
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.processor import WorkOrderProcessor
from enclave_bridge.requester import SentWorkOrder, WorkerDetails, build_work_order
from enclave_bridge.result_signature import (
    RESULT_TYPEHASH,
    EthereumDomain,
    FabricDomain,
    eip712_digest,
    sign_eip712,
    sign_fabric,
)
from enclave_bridge.workload import default_registry
from tests.enclave.conftest import requires_vectors

REQUESTER_KEY = bytes.fromhex("11" * 32)
OTHER_KEY = bytes.fromhex("22" * 32)
DOMAIN = EthereumDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")


def order(details: WorkerDetails, key: bytes = REQUESTER_KEY) -> SentWorkOrder:
    return build_work_order(details, "echo-result", [b"hi"], requester_key=key)


def with_params(sent: SentWorkOrder, **changes: str) -> dict[str, Any]:
    request: dict[str, Any] = json.loads(json.dumps(sent.request))
    request["params"].update(changes)
    return request


@pytest.mark.parametrize("status", [0, 1, 2**256 - 1], ids=["zero", "one", "largest"])
def test_struct_hash_matches_abi_encoding(status: int) -> None:
    """The hand-built EIP-712 words equal eth_abi's encoding, short bytes included."""
    order_key, request_hash, response_hash = os.urandom(32), b"\x01" * 5, b""
    struct = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "bytes32", "uint256"],
            [RESULT_TYPEHASH, order_key, request_hash, response_hash, status],
        )
    )
    expected = keccak(b"\x19\x01" + DOMAIN.separator() + struct)

    assert eip712_digest(DOMAIN, order_key, request_hash, response_hash, status) == (
        expected
    )


@pytest.mark.parametrize(
    ("order_key", "status"),
    [(b"\x00" * 33, 0), (b"\x00" * 32, -1), (b"\x00" * 32, 2**256)],
    ids=["long-bytes", "negative", "too-large"],
)
def test_struct_hash_refuses_what_abi_cannot_encode(
    order_key: bytes, status: int
) -> None:
    """Values eth_abi would refuse raise ValueError instead of a wrong digest."""
    with pytest.raises(ValueError):
        eip712_digest(DOMAIN, order_key, b"\x00" * 32, b"\x00" * 32, status)


def test_key_objects_sign_as_key_bytes() -> None:
    """A kept coincurve key gives the same (deterministic) signatures as raw bytes."""
    secret, digest = bytes.fromhex("33" * 32), os.urandom(32)
    key = coincurve.PrivateKey(secret)
    fabric = FabricDomain("mychannel", "workorders")
    hashes = (os.urandom(32), os.urandom(32), os.urandom(32))

    assert crypto.sign_digest(key, digest) == crypto.sign_digest(secret, digest)
    assert sign_eip712(key, DOMAIN, *hashes, 3) == sign_eip712(
        secret, DOMAIN, *hashes, 3
    )
    assert sign_fabric(key, fabric, "wo", *hashes[1:], 3) == sign_fabric(
        secret, fabric, "wo", *hashes[1:], 3
    )


def test_depth_check_shortcut_keeps_strings_out() -> None:
    """Brackets inside strings do not count as nesting; real deep nesting still does."""
    limits = eea.Limits()
    in_strings = b'{"note": "' + b"[" * 100 + b'"}'
    deep = b"[" * (eea.MAX_JSON_DEPTH + 1) + b"]" * (eea.MAX_JSON_DEPTH + 1)

    assert eea.load_request(in_strings, limits).document == {"note": "[" * 100}
    with pytest.raises(WorkOrderError, match="nested"):
        eea.load_request(deep, limits)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("text", "shallow"),
    [
        # an unterminated run of \" behind 33 open braces
        (b"{" * 33 + b'"' + b'\\"' * 2_000_000, False),
        (b'"' * 4_000_000, True),
        # 33 open braces, then a string that ends in a lone backslash
        (b"{" * 33 + b'"' + b"\\" * 2_000_001, False),
        # one long closed string of escaped quotes inside one array
        (b'["' + b'\\"' * 1_000_000 + b'"' + b"]" * 40, True),
    ],
    ids=["unterminated-escaped-quotes", "quotes", "trailing-backslash", "long-string"],
)
def test_depth_check_is_linear_on_hostile_strings(text: bytes, shallow: bool) -> None:
    """4 MB of pathological string syntax is measured in one pass, and answered right.

    A quadratic scan (each quote of an unterminated run tried to the end
    again) takes hours on these; the timeout fails it.
    """
    assert eea._shallow(text) is shallow


@requires_vectors
def test_own_key_in_any_spelling_is_accepted(
    processor: WorkOrderProcessor,
    worker_details: WorkerDetails,
    worker_keys: WorkerKeys,
) -> None:
    """Upper-case hex and another PEM form of the worker's key pass; the string
    compare is only a shortcut."""
    public = worker_keys.encryption_key.public_key()
    pkcs1 = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    spki = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sent = order(worker_details)

    for spelling in (spki.hex().upper(), pkcs1.hex(), spki.rstrip(b"\n").hex()):
        request = with_params(sent, workerEncryptionKey=spelling)
        outcome = processor.process(request)
        # workerEncryptionKey is outside the request hash: only the key check runs.
        assert outcome.status == 0, (spelling[:40], outcome.response)


@requires_vectors
def test_cached_verifying_key_still_checks_every_signature(
    processor: WorkOrderProcessor, worker_details: WorkerDetails
) -> None:
    """A verifying key seen before does not let a signature by another key pass."""
    first = order(worker_details)
    forged = order(worker_details, key=OTHER_KEY)
    request = with_params(forged, verifyingKey=first.params["verifyingKey"])

    assert processor.process(first.request).status == 0
    outcome = processor.process(request)

    assert outcome.stage == "requester_signature"


@requires_vectors
def test_verifying_key_cache_is_bounded(
    worker_keys: WorkerKeys,
    worker_details: WorkerDetails,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many requester keys never grow the cache past its bound, and all still verify."""
    monkeypatch.setattr(processor_module, "VERIFYING_KEY_CACHE_SIZE", 2)
    processor = WorkOrderProcessor(
        {worker_keys.worker_id: worker_keys}, default_registry()
    )

    for n in range(5):
        sent = order(worker_details, key=bytes([n + 1]) * 32)
        assert processor.process(sent.request).status == 0
        assert len(processor._verifying_keys) <= 2
