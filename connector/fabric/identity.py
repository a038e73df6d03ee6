"""An X.509 client identity of a Fabric MSP, and the signatures Fabric expects.

Fabric identifies a client by a ``SerializedIdentity`` (MSP id and the PEM
certificate) and accepts only ECDSA signatures with a low ``s`` (the MSP
rejects the malleable twin), DER encoded, over SHA-256 of the signed bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from fabric_protos.msp import identities_pb2

from enclave_bridge.errors import ConfigurationError

# Order of the P-256 group: a signature's s above half of it is flipped.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True, slots=True)
class FabricIdentity:
    """A signing identity: MSP id, certificate PEM and its P-256 private key."""

    msp_id: str
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey

    def serialized(self) -> bytes:
        """The ``SerializedIdentity`` bytes Fabric puts in headers and requests."""
        identity = identities_pb2.SerializedIdentity(
            mspid=self.msp_id, id_bytes=self.cert_pem
        )
        return bytes(identity.SerializeToString())

    def sign(self, message: bytes) -> bytes:
        """DER ECDSA P-256 over SHA-256 of ``message``, normalised to low s."""
        der = self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)

        return encode_dss_signature(r, min(s, P256_ORDER - s))

    @property
    def label(self) -> str:
        """A short, stable name for logs and the store: MSP id and cert digest."""
        digest = hashlib.sha256(self.cert_pem).hexdigest()[:16]
        return f"{self.msp_id}:{digest}"


def load_identity(msp_id: str, cert_path: Path, key_path: Path) -> FabricIdentity:
    """Read a PEM certificate and a PEM (PKCS#8 or SEC1) P-256 private key."""
    try:
        cert = cert_path.read_bytes()
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the Fabric identity ({cert_path}, {key_path}): {exc.strerror}"
        ) from exc
    except ValueError as exc:
        raise ConfigurationError(
            f"{key_path} is not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise ConfigurationError(f"{key_path} does not hold a P-256 private key")

    return FabricIdentity(msp_id, cert, key)
