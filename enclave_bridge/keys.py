"""A worker identity's private keys, as held in a pool process's memory only."""

from __future__ import annotations

from dataclasses import dataclass, field

import coincurve
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_bridge.result_signature import address_of_private_key


@dataclass(frozen=True)
class WorkerKeys:
    """One worker: its EEA id, secp256k1 signing key and RSA-3072 encryption key.

    ``repr`` never shows key material.
    """

    worker_id: str
    signing_key: bytes = field(repr=False)
    encryption_key: rsa.RSAPrivateKey = field(repr=False)

    @property
    def signing_address(self) -> str:
        """The Ethereum address the registries store for this worker."""
        return address_of_private_key(self.signing_key)

    @property
    def verifying_key(self) -> coincurve.PublicKey:
        return coincurve.PrivateKey(self.signing_key).public_key
