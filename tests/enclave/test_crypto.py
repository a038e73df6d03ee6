"""The EEA cryptography: hashes, AES-GCM, RSA-OAEP, ECDSA secp256k1."""

from __future__ import annotations

import base64
import hashlib

import coincurve
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_bridge import crypto
from enclave_bridge.crypto import OaepHash
from enclave_bridge.eea import DataItem, ResponseItem, WorkOrderRequest
from enclave_bridge.errors import CryptoError

KEY = bytes(range(32))
IV = bytes(12)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 3072)


def _request(out_data: tuple[DataItem, ...] | None) -> WorkOrderRequest:
    return WorkOrderRequest(
        work_order_id="aa",
        worker_id="bb",
        workload_id="cc",
        requester_id="dd",
        requester_nonce="ee",
        session_key_iv="00" * 12,
        encrypted_session_key="00",
        encrypted_request_hash="00",
        in_data=(DataItem(1, "B"), DataItem(0, "A", data_hash="H")),
        out_data=out_data,
    )


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_request_hash_recipe() -> None:
    """SHA256(h1 ‖ h2) with items sorted by index, strings as sent."""
    expected = _sha(_sha(b"eeaabbccdd") + _sha(b"HAB"))

    assert crypto.request_hash(_request(None)) == expected


def test_empty_out_data_is_left_out_but_empty_strings_are_hashed() -> None:
    """outData [] adds nothing; an outData whose strings are empty adds SHA256("") (Python)."""
    no_out = crypto.request_hash(_request(None))

    assert crypto.request_hash(_request(())) == no_out
    with_empty = crypto.request_hash(_request((DataItem(0, ""),)))
    assert with_empty == _sha(_sha(b"eeaabbccdd") + _sha(b"HAB") + _sha(b""))


def test_response_hash_recipe() -> None:
    """SHA256(h1 ‖ h2) over the nonce, ids and outData as shipped."""
    items = [ResponseItem(1, "Y", "d2", "", ""), ResponseItem(0, "X", "d1", "-", "IV")]

    digest = crypto.response_hash("N", "a", "b", "c", "d", items)

    assert digest == _sha(_sha(b"Nabcd") + _sha(b"Xd1-IVYd2"))


def test_worker_nonce_shape() -> None:
    """workerNonce is base64 of SHA-256 of 16 random bytes: 44 characters."""
    nonce = crypto.worker_nonce(lambda n: b"\x01" * n)

    assert nonce == base64.b64encode(_sha(b"\x01" * 16)).decode()
    assert len(nonce) == 44


def test_data_hash_is_upper_hex() -> None:
    """outData dataHash is upper-case hex SHA-256 of the plaintext."""
    assert crypto.data_hash_hex(b"x") == hashlib.sha256(b"x").hexdigest().upper()


def test_gcm_round_trip_and_tamper() -> None:
    """AES-GCM appends a 16-byte tag; any change fails authentication."""
    sealed = crypto.gcm_encrypt(KEY, IV, b"secret")

    assert len(sealed) == len(b"secret") + 16
    assert crypto.gcm_decrypt(KEY, IV, sealed) == b"secret"
    assert crypto.gcm_decrypt(KEY, IV, crypto.gcm_encrypt(KEY, IV, b"")) == b""
    for bad in (sealed[:-1], bytes([sealed[0] ^ 1]) + sealed[1:], sealed[:15]):
        with pytest.raises(CryptoError):
            crypto.gcm_decrypt(KEY, IV, bad)
    with pytest.raises(CryptoError):
        crypto.gcm_decrypt(KEY, bytes(11), sealed)
    with pytest.raises(CryptoError):
        crypto.gcm_decrypt(KEY[:16], IV, sealed)


@pytest.mark.parametrize("oaep", list(OaepHash))
def test_oaep_round_trip_and_seeded_encoding(
    rsa_key: rsa.RSAPrivateKey, oaep: OaepHash
) -> None:
    """The seeded OAEP encoder is real OAEP: the key decrypts it, and it is deterministic."""
    seed = bytes(range(hashlib.new(oaep.value).digest_size))
    public = rsa_key.public_key()

    wrapped = crypto.rsa_wrap(public, KEY, oaep, seed=seed)

    assert wrapped == crypto.rsa_wrap(public, KEY, oaep, seed=seed)
    assert crypto.unwrap_session_key(rsa_key, wrapped, oaep) == KEY
    assert (
        crypto.unwrap_session_key(rsa_key, crypto.rsa_wrap(public, KEY, oaep), oaep)
        == KEY
    )


def test_unwrap_failures_share_one_message(rsa_key: rsa.RSAPrivateKey) -> None:
    """Wrong hash, wrong length, garbage and a short key raise the same error."""
    public = rsa_key.public_key()
    cases = [
        crypto.rsa_wrap(public, KEY, OaepHash.SHA1),
        b"\x00" * 10,
        b"\x7f" * 384,
        crypto.rsa_wrap(public, KEY[:16], OaepHash.SHA256),
    ]
    messages = set()
    for ciphertext in cases:
        with pytest.raises(CryptoError) as info:
            crypto.unwrap_session_key(rsa_key, ciphertext, OaepHash.SHA256)
        messages.add(str(info.value))

    assert messages == {crypto.UNWRAP_FAILED}


def test_item_key_wrap_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    """A per-item key travels as IV ‖ GCM(session key, OAEP(key)) ‖ tag in upper hex."""
    data_key = bytes(32 * [7])
    wrapped = crypto.wrap_item_key(
        rsa_key.public_key(), KEY, data_key, IV, OaepHash.SHA256
    )

    raw = bytes.fromhex(wrapped)
    assert wrapped.isupper()
    assert raw[:12] == IV and len(raw) == 12 + 384 + 16
    assert crypto.unwrap_item_key(rsa_key, KEY, raw, OaepHash.SHA256) == data_key
    with pytest.raises(CryptoError, match="could not unwrap"):
        crypto.unwrap_item_key(rsa_key, bytes(32), raw, OaepHash.SHA256)


def test_signatures_low_s_and_high_s_verify() -> None:
    """We sign with low s; verification accepts the high-s twin and refuses other digests."""
    private = bytes.fromhex("33" * 32)
    public = coincurve.PrivateKey(private).public_key
    digest = _sha(b"request")

    for n in range(8):
        der = crypto.sign_digest(private, _sha(bytes([n])))
        assert crypto.is_low_s(der)
    der = crypto.sign_digest(private, digest)
    twin = crypto.flip_s(der)

    assert not crypto.is_low_s(twin)
    assert crypto.verify_digest(public, digest, der)
    assert crypto.verify_digest(public, digest, twin)
    assert not crypto.verify_digest(public, _sha(b"other"), twin)
    assert not crypto.verify_digest(public, digest, der[:-1])
    assert not crypto.verify_digest(public, digest, b"\x30\x00")
    assert not crypto.verify_digest_b64(public, digest, "not base64!")


def test_verifying_key_formats() -> None:
    """A secp256k1 key loads from PEM, SEC1 bytes and SEC1 hex; other keys are refused."""
    public = coincurve.PrivateKey(bytes.fromhex("44" * 32)).public_key
    pem = crypto.public_key_pem(public)

    assert crypto.load_verifying_key(pem).format() == public.format()
    assert crypto.load_verifying_key(public.format()).format() == public.format()
    assert (
        crypto.load_verifying_key(public.format(False).hex()).format()
        == public.format()
    )
    for bad in (
        "",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b"\x02" * 5,
    ):
        with pytest.raises(CryptoError):
            crypto.load_verifying_key(bad)


def test_non_secp256k1_pem_refused() -> None:
    """A PEM key on another curve is not a requester key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    with pytest.raises(CryptoError, match="secp256k1"):
        crypto.load_verifying_key(pem)
