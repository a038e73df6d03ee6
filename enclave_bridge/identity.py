"""Worker identities: generation, sealing at rest, rotation, published details.

A worker identity is an EEA worker id, a secp256k1 signing key and an
RSA-3072 encryption key. Without TEE hardware the private keys live in pool
processes only and are sealed on disk:

* the sealed file is JSON with a clear header (format, worker id, public
  keys, KDF parameters, salt, nonce) and an AES-256-GCM ciphertext of the
  private keys; the key comes from scrypt over the operator's passphrase;
* the header is the GCM associated data, so changing any header field (the
  worker id, a public key, a KDF parameter) fails authentication like a
  changed ciphertext does;
* a wrong passphrase and a tampered file are indistinguishable to GCM and
  both raise :class:`~enclave_bridge.errors.ConfigurationError`.

The details published for a worker follow Avalon's ``WorkerRetrieve``
result: ``encryptionKeySignature`` is a low-S DER ECDSA signature (upper-case
hex) by the signing key over SHA-256 of the encryption key's PEM text, so a
requester can check that the encryption key belongs to the signing key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import coincurve
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from enclave_bridge.errors import ConfigurationError
from enclave_bridge.keys import WorkerKeys

if TYPE_CHECKING:
    from enclave_bridge.attestation import Attester

SEALED_FORMAT = "tcbridge-sealed-worker/1"

RSA_BITS = 3072
RSA_PUBLIC_EXPONENT = 65537

# scrypt cost: 2**15 x 8 x 128 bytes = 32 MiB and about 0.1 s per unseal here,
# paid once per identity per pool process; tests may lower it.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# Refuse absurd parameters read from a file (memory exhaustion by a bad file).
_SCRYPT_MAX_N = 2**20

_SALT_BYTES = 16
_NONCE_BYTES = 12

# Avalon publishes zero placeholders where SGX would report measurements.
_ZERO_MEASUREMENT = "0" * 64


def worker_id_from_name(name: str) -> str:
    """Avalon's derivation: lower-case hex SHA-256 of the worker's name."""
    return hashlib.sha256(name.encode()).hexdigest()


def generate_identity(name: str) -> WorkerKeys:
    """A fresh worker identity named ``name``."""
    return WorkerKeys(
        worker_id=worker_id_from_name(name),
        signing_key=coincurve.PrivateKey().secret,
        encryption_key=_new_rsa_key(),
    )


def rotate_encryption_key(keys: WorkerKeys) -> WorkerKeys:
    """The same identity with a new RSA key; the old one is not kept anywhere."""
    return WorkerKeys(
        worker_id=keys.worker_id,
        signing_key=keys.signing_key,
        encryption_key=_new_rsa_key(),
    )


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(
        public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_BITS
    )


def load_test_keys(path: Path | str) -> WorkerKeys:
    """Read a ``worker-keys.TEST-ONLY.json`` file (PEM keys) into WorkerKeys.

    Meant for published test keys; production keys come from sealed files.
    """
    raw = json.loads(Path(path).read_text())
    try:
        rsa_key = serialization.load_pem_private_key(
            raw["encryptionPrivateKeyPem"].encode(), password=None
        )
        ec_key = serialization.load_pem_private_key(
            raw["signingPrivateKeyPem"].encode(), password=None
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path}: not a worker key file ({exc})") from exc
    if not isinstance(rsa_key, rsa.RSAPrivateKey) or rsa_key.key_size != RSA_BITS:
        raise ConfigurationError(f"{path}: the encryption key must be RSA-{RSA_BITS}")
    if not isinstance(ec_key, ec.EllipticCurvePrivateKey) or not isinstance(
        ec_key.curve, ec.SECP256K1
    ):
        raise ConfigurationError(f"{path}: the signing key must be secp256k1")
    signing = ec_key.private_numbers().private_value.to_bytes(32, "big")

    return WorkerKeys(
        worker_id=str(raw["workerId"]).lower(),
        signing_key=signing,
        encryption_key=rsa_key,
    )


# --- public keys in the formats the EEA details use -------------------------


def verification_key_pem(keys: WorkerKeys) -> str:
    """The secp256k1 public key as PEM SubjectPublicKeyInfo (named curve)."""
    point = keys.verifying_key.format(compressed=False)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), point)
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def encryption_key_pem(keys: WorkerKeys) -> str:
    """The RSA public key as PEM SubjectPublicKeyInfo, trailing newline included."""
    return (
        keys.encryption_key.public_key()
        .public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


def sign_encryption_key(keys: WorkerKeys, encryption_pem: str | None = None) -> str:
    """Upper-case hex DER (low S) signature over SHA-256 of the encryption key PEM."""
    pem = encryption_pem if encryption_pem is not None else encryption_key_pem(keys)
    digest = hashlib.sha256(pem.encode()).digest()
    der = coincurve.PrivateKey(keys.signing_key).sign(digest, hasher=None)
    return der.hex().upper()


def verify_encryption_key_signature(
    verification_pem: str, encryption_pem: str, signature_hex: str
) -> bool:
    """Check an ``encryptionKeySignature`` the way requesters do (high S passes too)."""
    try:
        public = serialization.load_pem_public_key(verification_pem.encode())
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, ec.SECP256K1
        ):
            return False
        digest = hashlib.sha256(encryption_pem.encode()).digest()
        # OpenSSL accepts high S as well, as Avalon's requesters do.
        public.verify(
            bytes.fromhex(signature_hex), digest, ec.ECDSA(Prehashed(hashes.SHA256()))
        )
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError):
        return False


# --- the published details ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """Attestation evidence as it appears in a worker's details."""

    proof_data_type: str
    proof_data: str
    extended_measurements: tuple[str, ...] = (_ZERO_MEASUREMENT, _ZERO_MEASUREMENT)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """What a registry publishes for a worker: no private key material."""

    worker_id: str
    signing_address: str
    details: Mapping[str, Any]


def worker_details(keys: WorkerKeys, evidence: Evidence) -> dict[str, Any]:
    """EEA worker details, shaped like Avalon's ``WorkerRetrieve`` result."""
    encryption_pem = encryption_key_pem(keys)

    return {
        "workOrderSyncUri": "",
        "workOrderAsyncUri": "",
        "workOrderPullUri": "",
        "workOrderNotifyUri": "",
        "receiptInvocationUri": "",
        "workOrderInvocationAddress": "",
        "receiptInvocationAddress": "",
        "fromAddress": "",
        "hashingAlgorithm": "SHA-256",
        "signingAlgorithm": "SECP256K1",
        "keyEncryptionAlgorithm": "RSA-OAEP-3072",
        "dataEncryptionAlgorithm": "AES-GCM-256",
        "workOrderPayloadFormats": "JSON-RPC",
        "workerTypeData": {
            "verificationKey": verification_key_pem(keys),
            "extendedMeasurements": list(evidence.extended_measurements),
            "proofDataType": evidence.proof_data_type,
            "proofData": evidence.proof_data,
            "encryptionKey": encryption_pem,
            "encryptionKeySignature": sign_encryption_key(keys, encryption_pem),
        },
    }


def worker_record(keys: WorkerKeys, evidence: Evidence) -> WorkerRecord:
    return WorkerRecord(
        worker_id=keys.worker_id,
        signing_address=keys.signing_address,
        details=worker_details(keys, evidence),
    )


# --- sealing -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedIdentity:
    """A sealed identity: the clear header plus the encrypted private keys.

    Safe to hold, pass to pool processes and log by ``worker_id``: without the
    passphrase it reveals public keys only.
    """

    worker_id: str
    blob: bytes = field(repr=False)

    @property
    def header(self) -> Mapping[str, Any]:
        return _parse_sealed(self.blob)[0]


def seal(
    keys: WorkerKeys,
    passphrase: bytes | str,
    *,
    scrypt_n: int = SCRYPT_N,
) -> SealedIdentity:
    """Encrypt ``keys`` under a key derived from ``passphrase``."""
    salt = secrets.token_bytes(_SALT_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    header: dict[str, Any] = {
        "format": SEALED_FORMAT,
        "workerId": keys.worker_id,
        "verificationKey": verification_key_pem(keys),
        "encryptionKey": encryption_key_pem(keys),
        "kdf": {
            "name": "scrypt",
            "n": scrypt_n,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(),
        },
        "nonce": base64.b64encode(nonce).decode(),
    }
    rsa_der = keys.encryption_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Private keys exist in clear only in this buffer, inside this process.
    plaintext = len(keys.signing_key).to_bytes(2, "big") + keys.signing_key + rsa_der
    key = _derive_key(passphrase, header["kdf"])
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, _associated_data(header))
    document = {"header": header, "ciphertext": base64.b64encode(ciphertext).decode()}

    return SealedIdentity(
        worker_id=keys.worker_id, blob=json.dumps(document, indent=1).encode()
    )


def unseal(sealed: SealedIdentity | bytes, passphrase: bytes | str) -> WorkerKeys:
    """The private keys back; ConfigurationError on a wrong passphrase or tampering."""
    blob = sealed.blob if isinstance(sealed, SealedIdentity) else sealed
    header, ciphertext = _parse_sealed(blob)
    key = _derive_key(passphrase, header["kdf"])
    try:
        nonce = base64.b64decode(header["nonce"], validate=True)
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _associated_data(header))
    except (InvalidTag, ValueError) as exc:
        raise ConfigurationError(
            f"cannot unseal worker {header['workerId']}: wrong passphrase, or the "
            "sealed file was altered; check the pool passphrase"
            " (TCBRIDGE_POOL_PASSPHRASE or [pool] passphrase_file)"
        ) from exc

    size = int.from_bytes(plaintext[:2], "big")
    signing_key = plaintext[2 : 2 + size]
    # GCM authenticated the bytes, so the slow RSA consistency check is redundant.
    rsa_key = serialization.load_der_private_key(
        plaintext[2 + size :], password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(rsa_key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"sealed worker {header['workerId']}: not an RSA key")
    keys = WorkerKeys(
        worker_id=header["workerId"], signing_key=signing_key, encryption_key=rsa_key
    )
    if (
        verification_key_pem(keys) != header["verificationKey"]
        or encryption_key_pem(keys) != header["encryptionKey"]
    ):
        raise ConfigurationError(
            f"sealed worker {header['workerId']}: public keys do not match private keys"
        )

    return keys


def save_sealed(path: Path | str, sealed: SealedIdentity) -> None:
    """Write atomically (temporary file + rename), readable by the owner only."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, sealed.blob)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def load_sealed(path: Path | str) -> SealedIdentity:
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read sealed worker file {path}: {exc}"
        ) from exc
    header, _ = _parse_sealed(blob)

    return SealedIdentity(worker_id=header["workerId"], blob=blob)


def rotate_sealed(
    path: Path | str, passphrase: bytes | str, attester: Attester
) -> WorkerRecord:
    """Replace the sealed file's encryption key; returns the public record to publish.

    The new file is sealed with a fresh salt and nonce; the old RSA key is not
    in it. Publish the returned details (new ``encryptionKey`` and
    ``encryptionKeySignature``) and restart the pool, whose processes keep
    the key they unsealed; orders encrypted to the old key are then refused.
    """
    old = load_sealed(path)
    kdf = old.header["kdf"]
    keys = rotate_encryption_key(unseal(old, passphrase))
    save_sealed(path, seal(keys, passphrase, scrypt_n=int(kdf["n"])))

    evidence = attester.evidence(verification_key_pem(keys), encryption_key_pem(keys))

    return worker_record(keys, evidence)


def _parse_sealed(blob: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        document = json.loads(blob)
        header = document["header"]
        ciphertext = base64.b64decode(document["ciphertext"], validate=True)
        if header["format"] != SEALED_FORMAT:
            raise ValueError(f"unknown format {header['format']!r}")
        str(header["workerId"])
        kdf = header["kdf"]
        if kdf["name"] != "scrypt" or not 2 <= int(kdf["n"]) <= _SCRYPT_MAX_N:
            raise ValueError("unsupported key derivation parameters")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"not a sealed worker identity: {exc}") from exc

    return header, ciphertext


def _derive_key(passphrase: bytes | str, kdf: Mapping[str, Any]) -> bytes:
    secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
    if not secret:
        raise ConfigurationError("the operator passphrase for sealed workers is empty")
    scrypt = Scrypt(
        salt=base64.b64decode(kdf["salt"]),
        length=32,
        n=int(kdf["n"]),
        r=int(kdf["r"]),
        p=int(kdf["p"]),
    )

    return scrypt.derive(secret)


def _associated_data(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
