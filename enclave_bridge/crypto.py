"""The cryptography of EEA work orders, byte-compatible with Avalon.

Hashes (SHA-256 throughout, strings hashed as sent, UTF-8):

* item string: ``dataHash ‖ data ‖ encryptedDataEncryptionKey ‖ iv`` (absent
  fields are empty); array digest: SHA-256 of the item strings of the items
  sorted by ``index``;
* request hash: ``SHA256(h1 ‖ h2 ‖ h3)`` with ``h1 = SHA256(requesterNonce ‖
  workOrderId ‖ workerId ‖ workloadId ‖ requesterId)``, ``h2`` the inData
  digest and ``h3`` the outData digest, present only when outData is a
  non-empty array;
* response hash: ``SHA256(h1 ‖ h2)`` with ``h1 = SHA256(workerNonce ‖
  workOrderId ‖ workerId ‖ workloadId ‖ requesterId)`` and ``h2`` the
  outData digest.

Avalon's Python and C++ code disagree on one corner: C++ leaves an array
digest out when the array's concatenated string is empty, Python hashes the
empty string. We follow Python (the recipe the vectors' README states and
the one Avalon's client verifies with); Avalon's SDK cannot build a request
where the two differ.

Key wrapping: RSA-OAEP with MGF1 using the same hash as OAEP. Avalon uses
SHA-1 without saying so; tcbridge's requesters use SHA-256 and say so in
``keyEncryptionAlgorithm``. The choice is bound to the request by the
wrapping itself: stripping the field makes the worker decode with SHA-1,
which fails on a SHA-256 wrapping, so no one can downgrade a tcbridge
request to Avalon's shared-IV answers. Every unwrap failure raises the same
:class:`CryptoError` with the same message (no padding oracle).

Data: AES-256-GCM, 12-byte IV, 16-byte tag appended, no associated data.
A per-item data key travels as ``IV ‖ AES-GCM(session key, IV, RSA-OAEP(data
key)) ‖ tag`` in upper-case hex, the layout Avalon's C++ worker unwraps.

Signatures: ECDSA secp256k1 over a 32-byte digest signed as is, DER. We
sign with low s; we verify either s, as Avalon's clients do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import coincurve
import sha3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave_bridge.errors import CryptoError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

GCM_IV_BYTES = 12
GCM_TAG_BYTES = 16
SESSION_KEY_BYTES = 32

UNWRAP_FAILED = "could not unwrap the key: wrong worker key, algorithm or ciphertext"
DECRYPT_FAILED = "AES-GCM authentication failed: data tampered or wrong key/IV"


class HashedItem(Protocol):
    @property
    def index(self) -> int: ...

    def hash_string(self) -> str: ...


class OaepHash(Enum):
    """The hash of RSA-OAEP and its MGF1."""

    SHA1 = "sha1"
    SHA256 = "sha256"

    def algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA1() if self is OaepHash.SHA1 else hashes.SHA256()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def keccak256(data: bytes) -> bytes:
    """Ethereum's Keccak-256 (not FIPS SHA3-256, which pads differently).

    From safe-pysha3's C code: about 1 µs a call here, against 7-11 µs for
    eth_utils.keccak (pycryptodome through cffi), and a worker makes three
    per work order.
    """
    digest: bytes = sha3.keccak_256(data).digest()
    return digest


def data_hash_hex(plaintext: bytes) -> str:
    """outData ``dataHash``: SHA-256 of the plaintext, upper-case hex."""
    return sha256(plaintext).hex().upper()


def array_concat(items: Iterable[HashedItem]) -> str:
    return "".join(item.hash_string() for item in sorted(items, key=lambda i: i.index))


def array_digest(items: Iterable[HashedItem]) -> bytes:
    return sha256(array_concat(items).encode())


@dataclass(frozen=True, slots=True)
class RequestHashParts:
    """Every intermediate of the request hash (the vectors publish them all)."""

    hash1_input: str
    hash1: bytes
    in_data_concat: str
    in_data_hash: bytes
    out_data_concat: str | None
    out_data_hash: bytes | None

    @property
    def final_input(self) -> bytes:
        return self.hash1 + self.in_data_hash + (self.out_data_hash or b"")

    @property
    def request_hash(self) -> bytes:
        return sha256(self.final_input)


class RequestFields(Protocol):
    @property
    def requester_nonce(self) -> str: ...
    @property
    def work_order_id(self) -> str: ...
    @property
    def worker_id(self) -> str: ...
    @property
    def workload_id(self) -> str: ...
    @property
    def requester_id(self) -> str: ...
    @property
    def in_data(self) -> tuple[HashedItem, ...]: ...
    @property
    def out_data(self) -> tuple[HashedItem, ...] | None: ...


def request_hash_parts(request: RequestFields) -> RequestHashParts:
    hash1_input = (
        request.requester_nonce
        + request.work_order_id
        + request.worker_id
        + request.workload_id
        + request.requester_id
    )
    in_concat = array_concat(request.in_data)
    out_concat = array_concat(request.out_data) if request.out_data else None
    return RequestHashParts(
        hash1_input=hash1_input,
        hash1=sha256(hash1_input.encode()),
        in_data_concat=in_concat,
        in_data_hash=sha256(in_concat.encode()),
        out_data_concat=out_concat,
        out_data_hash=None if out_concat is None else sha256(out_concat.encode()),
    )


def request_hash(request: RequestFields) -> bytes:
    """The EEA request hash (32 bytes)."""
    return request_hash_parts(request).request_hash


def response_hash(
    worker_nonce: str,
    work_order_id: str,
    worker_id: str,
    workload_id: str,
    requester_id: str,
    out_data: Iterable[HashedItem],
) -> bytes:
    """The EEA response hash (32 bytes) the worker signs."""
    h1 = sha256(
        (worker_nonce + work_order_id + worker_id + workload_id + requester_id).encode()
    )
    return sha256(h1 + array_digest(out_data))


def worker_nonce(rng: Callable[[int], bytes]) -> str:
    """Base64 of SHA-256 of 16 random bytes, as Avalon's C++ worker makes it."""
    return base64.b64encode(sha256(rng(16))).decode()


# --- AES-256-GCM -----------------------------------------------------------


def gcm_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """Ciphertext ‖ 16-byte tag."""
    return AESGCM(key).encrypt(iv, plaintext, None)


def gcm_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Plaintext of ciphertext ‖ tag; :class:`CryptoError` if it does not verify."""
    if (
        len(key) != SESSION_KEY_BYTES
        or len(iv) != GCM_IV_BYTES
        or len(data) < GCM_TAG_BYTES
    ):
        raise CryptoError(DECRYPT_FAILED)
    try:
        return AESGCM(key).decrypt(iv, data, None)
    except InvalidTag:
        raise CryptoError(DECRYPT_FAILED) from None


# --- RSA-OAEP --------------------------------------------------------------


def oaep_padding(oaep: OaepHash) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=oaep.algorithm()),
        algorithm=oaep.algorithm(),
        label=None,
    )


def rsa_unwrap(
    private_key: rsa.RSAPrivateKey, ciphertext: bytes, oaep: OaepHash
) -> bytes:
    """One RSA-OAEP decryption; every failure is the same :class:`CryptoError`."""
    try:
        return private_key.decrypt(ciphertext, oaep_padding(oaep))
    except ValueError:
        raise CryptoError(UNWRAP_FAILED) from None


def rsa_wrap(
    public_key: rsa.RSAPublicKey,
    message: bytes,
    oaep: OaepHash,
    *,
    seed: bytes | None = None,
) -> bytes:
    """RSA-OAEP encryption; with ``seed`` the result is reproducible byte for byte."""
    if seed is None:
        return public_key.encrypt(message, oaep_padding(oaep))
    return _oaep_encrypt_with_seed(public_key, message, oaep, seed)


def _mgf1(seed: bytes, length: int, name: str) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.new(name, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _oaep_encrypt_with_seed(
    public_key: rsa.RSAPublicKey, message: bytes, oaep: OaepHash, seed: bytes
) -> bytes:
    # EME-OAEP encoding of RFC 8017 section 7.1.1 with an empty label.
    numbers = public_key.public_numbers()
    k = (public_key.key_size + 7) // 8
    h_len = hashlib.new(oaep.value).digest_size
    if len(seed) != h_len or len(message) > k - 2 * h_len - 2:
        raise ValueError("seed must be one digest long and the message must fit")
    l_hash = hashlib.new(oaep.value, b"").digest()
    db = l_hash + b"\x00" * (k - len(message) - 2 * h_len - 2) + b"\x01" + message
    masked_db = bytes(
        a ^ b for a, b in zip(db, _mgf1(seed, k - h_len - 1, oaep.value), strict=True)
    )
    masked_seed = bytes(
        a ^ b for a, b in zip(seed, _mgf1(masked_db, h_len, oaep.value), strict=True)
    )
    em = int.from_bytes(b"\x00" + masked_seed + masked_db, "big")
    return pow(em, numbers.e, numbers.n).to_bytes(k, "big")


def unwrap_session_key(
    private_key: rsa.RSAPrivateKey, encrypted_session_key: bytes, oaep: OaepHash
) -> bytes:
    """The 32-byte session key; any failure, including a wrong length, is one error."""
    key = rsa_unwrap(private_key, encrypted_session_key, oaep)
    if len(key) != SESSION_KEY_BYTES:
        raise CryptoError(UNWRAP_FAILED)
    return key


def wrap_item_key(
    public_key: rsa.RSAPublicKey,
    session_key: bytes,
    data_key: bytes,
    wrapped_iv: bytes,
    oaep: OaepHash,
    *,
    seed: bytes | None = None,
) -> str:
    """``encryptedDataEncryptionKey`` for a per-item data key (upper-case hex)."""
    wrapped = rsa_wrap(public_key, data_key, oaep, seed=seed)
    return (wrapped_iv + gcm_encrypt(session_key, wrapped_iv, wrapped)).hex().upper()


def unwrap_item_key(
    private_key: rsa.RSAPrivateKey, session_key: bytes, wrapped: bytes, oaep: OaepHash
) -> bytes:
    """The data key inside ``IV ‖ AES-GCM(session key, RSA-OAEP(key)) ‖ tag``."""
    try:
        inner = gcm_decrypt(session_key, wrapped[:GCM_IV_BYTES], wrapped[GCM_IV_BYTES:])
    except CryptoError:
        raise CryptoError(UNWRAP_FAILED) from None
    key = rsa_unwrap(private_key, inner, oaep)
    if len(key) != SESSION_KEY_BYTES:
        raise CryptoError(UNWRAP_FAILED)
    return key


# --- ECDSA secp256k1 -------------------------------------------------------


def sign_digest(private_key: bytes | coincurve.PrivateKey, digest: bytes) -> bytes:
    """DER ECDSA signature over a 32-byte digest, always low s (RFC 6979 nonce).

    Pass a ``coincurve.PrivateKey`` built once where the same key signs
    often: building one derives the public key, which costs more than
    the signature.
    """
    if not isinstance(private_key, coincurve.PrivateKey):
        private_key = coincurve.PrivateKey(private_key)
    return private_key.sign(digest, hasher=None)


def sign_digest_b64(private_key: bytes | coincurve.PrivateKey, digest: bytes) -> str:
    return base64.b64encode(sign_digest(private_key, digest)).decode()


def signature_s(der: bytes) -> int:
    return decode_dss_signature(der)[1]


def is_low_s(der: bytes) -> bool:
    """True when s ≤ n/2 (integer division)."""
    return signature_s(der) <= SECP256K1_N // 2


def flip_s(der: bytes) -> bytes:
    """The same signature with s replaced by n - s (low and high swap)."""
    r, s = decode_dss_signature(der)
    return encode_dss_signature(r, SECP256K1_N - s)


def verify_digest(public_key: coincurve.PublicKey, digest: bytes, der: bytes) -> bool:
    """Verify a DER signature over a digest; high s is accepted like low s."""
    try:
        r, s = decode_dss_signature(der)
        if encode_dss_signature(r, s) != der:
            return False
        if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
            return False
        # libsecp256k1 verifies low s only: normalise so high-s signatures
        # (Avalon's requesters do not normalise) verify as well.
        if s > SECP256K1_N // 2:
            der = encode_dss_signature(r, SECP256K1_N - s)
        return bool(public_key.verify(der, digest, hasher=None))
    except (ValueError, TypeError):
        return False


def verify_digest_b64(
    public_key: coincurve.PublicKey, digest: bytes, signature: str
) -> bool:
    try:
        der = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    return verify_digest(public_key, digest, der)


def load_verifying_key(key: str | bytes) -> coincurve.PublicKey:
    """A secp256k1 public key from PEM SubjectPublicKeyInfo or SEC1 bytes/hex."""
    raw = key.encode() if isinstance(key, str) else key
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            loaded = serialization.load_pem_public_key(raw)
            if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(
                loaded.curve, ec.SECP256K1
            ):
                raise CryptoError("verifying key is not a secp256k1 public key")
            point = loaded.public_bytes(
                serialization.Encoding.X962,
                serialization.PublicFormat.UncompressedPoint,
            )
            return coincurve.PublicKey(point)
        if len(raw) in (66, 130):
            raw = bytes.fromhex(raw.decode())
        return coincurve.PublicKey(raw)
    except CryptoError:
        raise
    except Exception as exc:  # cryptography and coincurve raise several kinds
        raise CryptoError("verifying key is not a secp256k1 public key") from exc


def public_key_pem(public_key: coincurve.PublicKey) -> str:
    """PEM SubjectPublicKeyInfo of a secp256k1 key, as Avalon publishes them."""
    loaded = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256K1(), public_key.format(compressed=False)
    )
    return loaded.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def same_bytes(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
