"""Worker identities: sealing, rotation and the published EEA details."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from enclave_bridge import identity
from enclave_bridge.attestation import SimulatedAttester
from enclave_bridge.errors import ConfigurationError
from enclave_bridge.identity import (
    Evidence,
    generate_identity,
    load_sealed,
    load_test_keys,
    rotate_sealed,
    save_sealed,
    seal,
    unseal,
    verify_encryption_key_signature,
    worker_details,
)
from enclave_bridge.keys import WorkerKeys
from tests.enclave import vectors
from tests.pool.conftest import TEST_SCRYPT_N

PASS = "correct horse battery staple"


@pytest.fixture(scope="module")
def fresh_keys() -> WorkerKeys:
    return generate_identity("pool-test-worker")


def _secrets_of(keys: WorkerKeys) -> list[bytes]:
    """Byte strings that must never appear in a sealed file or a log line."""
    numbers = keys.encryption_key.private_numbers()
    rsa_der = keys.encryption_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    d = numbers.d.to_bytes((numbers.d.bit_length() + 7) // 8, "big")
    out = [keys.signing_key, rsa_der[-64:], d[:32]]
    return [*out, *(base64.b64encode(s) for s in out), *(s.hex().encode() for s in out)]


def test_worker_id_is_sha256_of_name() -> None:
    """A worker id is Avalon's: lower-case hex SHA-256 of the worker's name."""
    assert (
        identity.worker_id_from_name("singleton-worker-1")
        == vectors.worker()["workerId"]
    )


def test_generated_identity_has_the_right_key_types(fresh_keys: WorkerKeys) -> None:
    """A new identity has an RSA-3072 key and a 32-byte secp256k1 key."""
    assert fresh_keys.encryption_key.key_size == 3072
    assert len(fresh_keys.signing_key) == 32
    assert fresh_keys.worker_id == identity.worker_id_from_name("pool-test-worker")


def test_seal_round_trip(fresh_keys: WorkerKeys, tmp_path: Path) -> None:
    """A sealed identity saved to disk unseals to the same keys."""
    path = tmp_path / "worker.sealed"
    save_sealed(path, seal(fresh_keys, PASS, scrypt_n=TEST_SCRYPT_N))

    loaded = unseal(load_sealed(path), PASS)

    assert loaded.worker_id == fresh_keys.worker_id
    assert loaded.signing_key == fresh_keys.signing_key
    assert (
        loaded.encryption_key.private_numbers()
        == fresh_keys.encryption_key.private_numbers()
    )
    assert path.stat().st_mode & 0o077 == 0


def test_wrong_passphrase_is_a_configuration_error(fresh_keys: WorkerKeys) -> None:
    """Unsealing with a wrong passphrase raises ConfigurationError naming the cause."""
    sealed = seal(fresh_keys, PASS, scrypt_n=TEST_SCRYPT_N)

    with pytest.raises(ConfigurationError, match="wrong passphrase"):
        unseal(sealed, "not the passphrase")


@pytest.mark.parametrize("part", ["ciphertext", "workerId", "encryptionKey", "salt"])
def test_tampering_is_detected(fresh_keys: WorkerKeys, part: str) -> None:
    """Changing the ciphertext or any header field makes unsealing fail."""
    document = json.loads(seal(fresh_keys, PASS, scrypt_n=TEST_SCRYPT_N).blob)
    header = document["header"]
    if part == "ciphertext":
        raw = bytearray(base64.b64decode(document["ciphertext"]))
        raw[10] ^= 1
        document["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    elif part == "workerId":
        header["workerId"] = "00" * 32
    elif part == "encryptionKey":
        header["encryptionKey"] = header["encryptionKey"].replace("A", "B", 1)
    else:
        header["kdf"]["salt"] = base64.b64encode(b"\x00" * 16).decode()
    tampered = json.dumps(document).encode()

    with pytest.raises(ConfigurationError, match="altered"):
        unseal(tampered, PASS)


def test_sealed_file_and_repr_hold_no_key_material(fresh_keys: WorkerKeys) -> None:
    """Neither the sealed blob nor any repr shows private key bytes in any encoding."""
    sealed = seal(fresh_keys, PASS, scrypt_n=TEST_SCRYPT_N)
    texts = [sealed.blob, repr(sealed).encode(), repr(fresh_keys).encode()]

    for secret in _secrets_of(fresh_keys):
        for text in texts:
            assert secret not in text
    assert b"PRIVATE" not in sealed.blob
    assert len(repr(sealed)) < 200


def test_rotation_replaces_the_encryption_key(
    fresh_keys: WorkerKeys, tmp_path: Path
) -> None:
    """Rotation seals a new RSA key, keeps the signing key, signs the new key, drops the old."""
    path = tmp_path / "worker.sealed"
    save_sealed(path, seal(fresh_keys, PASS, scrypt_n=TEST_SCRYPT_N))

    record = rotate_sealed(path, PASS, SimulatedAttester())
    rotated = unseal(load_sealed(path), PASS)

    old_n = fresh_keys.encryption_key.public_key().public_numbers().n
    assert rotated.encryption_key.public_key().public_numbers().n != old_n
    assert rotated.signing_key == fresh_keys.signing_key
    data = record.details["workerTypeData"]
    assert data["encryptionKey"] == identity.encryption_key_pem(rotated)
    assert verify_encryption_key_signature(
        data["verificationKey"], data["encryptionKey"], data["encryptionKeySignature"]
    )
    old_pem = identity.encryption_key_pem(fresh_keys)
    assert old_pem.encode() not in path.read_bytes()
    for secret in _secrets_of(fresh_keys)[1:]:
        assert secret not in path.read_bytes()


def test_avalon_test_keys_load() -> None:
    """The vectors' TEST-ONLY key file loads into WorkerKeys with the vectors' worker id."""
    keys = load_test_keys(vectors.vectors_dir() / "worker-keys.TEST-ONLY.json")

    assert keys.worker_id == vectors.worker()["workerId"]
    assert keys.signing_key == vectors.worker_keys().signing_key


def test_details_match_avalon_worker_json() -> None:
    """Details built from the vectors' keys have worker.json's shape, keys and values."""
    keys = load_test_keys(vectors.vectors_dir() / "worker-keys.TEST-ONLY.json")
    avalon = vectors.worker()["workerRetrieveResponse"]["result"]["details"]
    evidence = Evidence(
        proof_data_type="TEE-SGX-IAS",
        proof_data="",
        extended_measurements=tuple(avalon["workerTypeData"]["extendedMeasurements"]),
    )

    ours = worker_details(keys, evidence)

    assert list(ours) == list(avalon)
    assert list(ours["workerTypeData"]) == list(avalon["workerTypeData"])
    for name, value in avalon.items():
        if name != "workerTypeData":
            assert ours[name] == value, name
    ours_data, theirs = ours["workerTypeData"], avalon["workerTypeData"]
    for name in theirs:
        if name != "encryptionKeySignature":
            assert ours_data[name] == theirs[name], name
    signature = ours_data["encryptionKeySignature"]
    assert signature == signature.upper()
    assert verify_encryption_key_signature(
        ours_data["verificationKey"], ours_data["encryptionKey"], signature
    )


def test_avalon_encryption_key_signature_verifies() -> None:
    """worker.json's own encryptionKeySignature verifies with our checker."""
    data = vectors.worker()["workerRetrieveResponse"]["result"]["details"][
        "workerTypeData"
    ]

    assert verify_encryption_key_signature(
        data["verificationKey"], data["encryptionKey"], data["encryptionKeySignature"]
    )
    assert not verify_encryption_key_signature(
        data["verificationKey"],
        data["encryptionKey"].replace("A", "B", 1),
        data["encryptionKeySignature"],
    )


def test_encryption_key_signature_is_low_s() -> None:
    """The signature over the encryption key is DER with low S."""
    from enclave_bridge import crypto

    keys = vectors.worker_keys()
    der = bytes.fromhex(identity.sign_encryption_key(keys))

    assert crypto.is_low_s(der)
