"""Test identities for the development peer: one CA per MSP, X.509 on P-256.

``generate_msp`` writes a CA and the certificates and keys of a peer and of
client identities to a folder; ``MspRegistry`` checks that a Fabric
``SerializedIdentity`` was issued by the CA of the MSP it names, and that a
signature over some bytes is that identity's (ECDSA P-256 with SHA-256, low
s, as Fabric's MSP requires). These are throw-away test keys, written
unencrypted: never use them for anything but the development peer.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from fabric_protos.msp import identities_pb2

from enclave_bridge.errors import CryptoError

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# Long enough for any test run or demo, short enough to be obviously a test CA.
VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class Identity:
    """A signing identity: MSP id, certificate PEM and private key."""

    msp_id: str
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey

    def serialized(self) -> bytes:
        """The ``SerializedIdentity`` bytes Fabric puts in headers."""
        identity = identities_pb2.SerializedIdentity(
            mspid=self.msp_id, id_bytes=self.cert_pem
        )
        return bytes(identity.SerializeToString())

    def sign(self, message: bytes) -> bytes:
        """DER ECDSA P-256 over SHA-256 of ``message``, normalised to low s."""
        der = self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return encode_dss_signature(r, min(s, P256_N - s))


def load_identity(msp_id: str, cert_path: Path, key_path: Path) -> Identity:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CryptoError(f"{key_path} does not hold an EC private key")
    return Identity(msp_id, cert_path.read_bytes(), key)


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def generate_msp(folder: Path, msp_id: str, users: list[str]) -> None:
    """Write ``ca.pem`` and ``<name>.pem`` / ``<name>.key`` for each user.

    Layout: ``folder/<msp_id>/ca.pem``, ``folder/<msp_id>/<user>.pem`` and
    ``folder/<msp_id>/<user>.key``. Existing files are left alone, so a
    restarted peer keeps its identities.
    """
    base = folder / msp_id
    if (base / "ca.pem").exists():
        return
    base.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"ca.{msp_id}", msp_id)
    ca_cert = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    for user in users:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            _name(user, msp_id), ca_name, key.public_key(), ca_key, ca=False
        )
        (base / f"{user}.pem").write_bytes(_pem(cert))
        _write_key(base / f"{user}.key", key)
    (base / "ca.pem").write_bytes(_pem(ca_cert))


def msp_identity(folder: Path, msp_id: str, user: str) -> Identity:
    base = folder / msp_id
    return load_identity(msp_id, base / f"{user}.pem", base / f"{user}.key")


class MspRegistry:
    """The MSPs a peer trusts: MSP id -> CA certificate."""

    def __init__(self, cas: dict[str, x509.Certificate]) -> None:
        self._cas = cas

    @classmethod
    def from_folder(cls, folder: Path) -> MspRegistry:
        cas = {
            path.parent.name: x509.load_pem_x509_certificate(path.read_bytes())
            for path in sorted(folder.glob("*/ca.pem"))
        }
        return cls(cas)

    def certificate_of(
        self, serialized_identity: bytes
    ) -> tuple[str, x509.Certificate]:
        """The MSP id and certificate of a valid identity; CryptoError otherwise."""
        identity = identities_pb2.SerializedIdentity()
        try:
            identity.ParseFromString(serialized_identity)
            cert = x509.load_pem_x509_certificate(identity.id_bytes)
        except Exception as exc:
            raise CryptoError("the creator is not a serialized X.509 identity") from exc
        ca = self._cas.get(identity.mspid)
        if ca is None:
            raise CryptoError(f"unknown MSP {identity.mspid!r}")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CryptoError(
                f"the certificate was not issued by the CA of {identity.mspid}"
            ) from exc
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CryptoError("the certificate is expired or not yet valid")
        return identity.mspid, cert

    def verify(
        self, serialized_identity: bytes, message: bytes, signature: bytes
    ) -> str:
        """Check ``signature`` over ``message`` by the identity; return its MSP id."""
        msp_id, cert = self.certificate_of(serialized_identity)
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CryptoError("the certificate does not hold an EC key")
        try:
            _, s = decode_dss_signature(signature)
        except ValueError as exc:
            raise CryptoError("the signature is not DER ECDSA") from exc
        if s > P256_N // 2:
            raise CryptoError("high-s signature refused (Fabric requires low s)")
        try:
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise CryptoError(
                "the signature does not verify for this identity"
            ) from exc
        return msp_id


def identity_fingerprint(serialized_identity: bytes) -> str:
    return hashlib.sha256(serialized_identity).hexdigest()[:16]
