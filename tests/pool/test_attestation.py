"""Attestation: simulated evidence and the requester's verifier."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enclave_bridge.attestation import AttestationVerifier, SimulatedAttester
from enclave_bridge.errors import AttestationRejected
from enclave_bridge.identity import worker_details
from enclave_bridge.keys import WorkerKeys
from tests.enclave import vectors


@pytest.fixture
def keys() -> WorkerKeys:
    return vectors.worker_keys()


def _simulated_details(keys: WorkerKeys) -> dict[str, Any]:
    return worker_details(keys, SimulatedAttester().evidence_for(keys))


def test_simulated_evidence_says_so(keys: WorkerKeys) -> None:
    """Simulated details name proofDataType "simulated" and claim no hardware."""
    data = _simulated_details(keys)["workerTypeData"]

    assert data["proofDataType"] == "simulated"
    statement = json.loads(data["proofData"])
    assert statement["kind"] == "simulated"
    assert statement["hardware"] is False


def test_verifier_rejects_simulated_by_default(keys: WorkerKeys) -> None:
    """A requester's verifier refuses simulated attestation unless told to accept it."""
    with pytest.raises(AttestationRejected, match="simulated"):
        AttestationVerifier().verify(_simulated_details(keys))


def test_verifier_accepts_simulated_when_allowed(keys: WorkerKeys) -> None:
    """With accept_simulated the verdict says simulated and no hardware."""
    verdict = AttestationVerifier(accept_simulated=True).verify(
        _simulated_details(keys)
    )

    assert verdict.kind == "simulated"
    assert verdict.hardware is False


def test_simulated_evidence_for_other_keys_is_rejected(keys: WorkerKeys) -> None:
    """Simulated evidence copied from another worker does not bind these keys."""
    details = _simulated_details(keys)
    other = SimulatedAttester().evidence("other key", "other key")
    details["workerTypeData"]["proofData"] = other.proof_data

    with pytest.raises(AttestationRejected, match="other keys"):
        AttestationVerifier(accept_simulated=True).verify(details)


def test_substituted_encryption_key_is_rejected(keys: WorkerKeys) -> None:
    """Details whose encryption key is not signed by the verification key are refused."""
    details = _simulated_details(keys)
    details["workerTypeData"]["encryptionKeySignature"] = "3006020101020101"

    with pytest.raises(AttestationRejected, match="encryptionKeySignature"):
        AttestationVerifier(accept_simulated=True).verify(details)


def test_unknown_kind_is_rejected() -> None:
    """Avalon's TEE-SGX-IAS details are refused when no verifier for that kind is set."""
    details = vectors.worker()["workerRetrieveResponse"]["result"]["details"]

    with pytest.raises(AttestationRejected, match="TEE-SGX-IAS"):
        AttestationVerifier(accept_simulated=True).verify(details)
