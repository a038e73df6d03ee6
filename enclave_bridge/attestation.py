"""Attestation: evidence a worker publishes, and the check a requester runs.

Two sides, each behind a small interface:

* an :class:`Attester` produces :class:`~enclave_bridge.identity.Evidence`
  for a worker's public keys (it goes into the worker's EEA details as
  ``proofDataType``, ``proofData`` and ``extendedMeasurements``);
* an :class:`AttestationVerifier` checks a worker's published details for a
  requester: the encryption key must be signed by the verification key, and
  the evidence must pass the :class:`EvidenceVerifier` registered for its
  ``proofDataType``.

The one built-in kind is ``simulated``: there is no TEE on these machines,
so its evidence makes no hardware claim and says so. It binds the public
keys only (anyone holding them can produce it), which is why the verifier
rejects it unless the requester explicitly accepts simulated workers. A
hardware kind (an SGX/TDX DCAP quote whose report data binds the same key
digest) plugs in as another Attester / EvidenceVerifier pair.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from enclave_bridge.errors import AttestationRejected
from enclave_bridge.identity import (
    Evidence,
    encryption_key_pem,
    verification_key_pem,
    verify_encryption_key_signature,
)
from enclave_bridge.keys import WorkerKeys

SIMULATED = "simulated"


def key_binding(verification_pem: str, encryption_pem: str) -> str:
    """Hex SHA-256 over both public keys: what evidence must bind to."""
    return hashlib.sha256((verification_pem + encryption_pem).encode()).hexdigest()


class Attester(Protocol):
    @property
    def kind(self) -> str: ...

    def evidence(self, verification_pem: str, encryption_pem: str) -> Evidence: ...


class EvidenceVerifier(Protocol):
    @property
    def kind(self) -> str: ...

    def verify(
        self, evidence: Evidence, verification_pem: str, encryption_pem: str
    ) -> None:
        """Return if the evidence is acceptable; raise AttestationRejected if not."""


@dataclass(frozen=True, slots=True)
class SimulatedAttester:
    """Evidence for a worker that runs without TEE hardware, saying exactly that."""

    kind: str = SIMULATED

    def evidence(self, verification_pem: str, encryption_pem: str) -> Evidence:
        statement = {
            "kind": SIMULATED,
            "hardware": False,
            "statement": (
                "no trusted execution environment: keys are sealed at rest and "
                "held only in the memory of the pool's worker processes"
            ),
            "keyBinding": key_binding(verification_pem, encryption_pem),
        }
        return Evidence(
            proof_data_type=SIMULATED,
            proof_data=json.dumps(statement, sort_keys=True, separators=(",", ":")),
        )

    def evidence_for(self, keys: WorkerKeys) -> Evidence:
        return self.evidence(verification_key_pem(keys), encryption_key_pem(keys))


@dataclass(frozen=True, slots=True)
class SimulatedEvidenceVerifier:
    """Checks that simulated evidence is well formed and binds the given keys."""

    kind: str = SIMULATED

    def verify(
        self, evidence: Evidence, verification_pem: str, encryption_pem: str
    ) -> None:
        try:
            statement = json.loads(evidence.proof_data)
        except ValueError as exc:
            raise AttestationRejected("simulated evidence is not JSON") from exc
        if not isinstance(statement, dict) or statement.get("kind") != SIMULATED:
            raise AttestationRejected("simulated evidence does not say it is simulated")
        if statement.get("keyBinding") != key_binding(verification_pem, encryption_pem):
            raise AttestationRejected("simulated evidence was made for other keys")


@dataclass(frozen=True, slots=True)
class AttestationVerdict:
    """What a requester learned: the evidence kind and whether hardware backs it."""

    worker_id: str | None
    kind: str
    hardware: bool


@dataclass
class AttestationVerifier:
    """A requester's check of a worker's details; rejects ``simulated`` by default."""

    accept_simulated: bool = False
    verifiers: dict[str, EvidenceVerifier] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.verifiers.setdefault(SIMULATED, SimulatedEvidenceVerifier())

    def verify(
        self, details: Mapping[str, Any], *, worker_id: str | None = None
    ) -> AttestationVerdict:
        """Check EEA worker details; raises AttestationRejected with the reason."""
        evidence, verification_pem, encryption_pem, signature = _read_details(details)
        if not verify_encryption_key_signature(
            verification_pem, encryption_pem, signature
        ):
            raise AttestationRejected(
                "the worker's encryptionKeySignature does not verify with its "
                "verificationKey: the encryption key may have been substituted"
            )

        kind = evidence.proof_data_type
        if kind == SIMULATED and not self.accept_simulated:
            raise AttestationRejected(
                "the worker offers simulated attestation (no hardware backs its keys); "
                "accept it only for development, with accept_simulated=True"
            )
        verifier = self.verifiers.get(kind)
        if verifier is None:
            raise AttestationRejected(f"no verifier for attestation kind {kind!r}")
        verifier.verify(evidence, verification_pem, encryption_pem)

        return AttestationVerdict(
            worker_id=worker_id, kind=kind, hardware=kind != SIMULATED
        )


def _read_details(details: Mapping[str, Any]) -> tuple[Evidence, str, str, str]:
    try:
        data = details["workerTypeData"]
        evidence = Evidence(
            proof_data_type=str(data["proofDataType"]),
            proof_data=str(data.get("proofData", "")),
            extended_measurements=tuple(
                str(m) for m in data.get("extendedMeasurements", [])
            ),
        )
        return (
            evidence,
            str(data["verificationKey"]),
            str(data["encryptionKey"]),
            str(data["encryptionKeySignature"]),
        )
    except (KeyError, TypeError) as exc:
        raise AttestationRejected(
            f"worker details lack attestation fields: {exc}"
        ) from exc
