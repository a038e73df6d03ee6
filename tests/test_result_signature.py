"""The Python side of the one result-signature definition, against the golden file."""

from __future__ import annotations

import hashlib
import json

import coincurve
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from enclave_bridge import golden
from enclave_bridge import result_signature as rs

GOLDEN = json.loads(golden.GOLDEN_PATH.read_text())


def test_golden_file_is_what_the_definition_produces() -> None:
    """Regenerating the golden file from the code changes nothing."""
    assert golden.build() == GOLDEN


def test_digest_matches_an_independent_eip712_encoder() -> None:
    """eth_account's EIP-712 encoder yields the same digest and signer."""
    eth = GOLDEN["ethereum"]
    message = encode_typed_data(full_message=eth["typedData"])
    signature = bytes.fromhex(eth["signature"][2:])

    assert Account.recover_message(message, signature=signature) == GOLDEN["signerAddress"]


def _inputs() -> tuple[rs.EthereumDomain, bytes, bytes, bytes, int]:
    msg = GOLDEN["ethereum"]["typedData"]["message"]
    dom = GOLDEN["ethereum"]["typedData"]["domain"]
    return (
        rs.EthereumDomain(dom["chainId"], dom["verifyingContract"]),
        bytes.fromhex(msg["orderKey"][2:]),
        bytes.fromhex(msg["requestHash"][2:]),
        bytes.fromhex(msg["responseHash"][2:]),
        msg["status"],
    )


def test_recover_accepts_the_golden_signature() -> None:
    """The golden signature recovers to the golden signer."""
    sig = bytes.fromhex(GOLDEN["ethereum"]["signature"][2:])

    assert rs.recover_eip712_signer(sig, *_inputs()) == GOLDEN["signerAddress"]


@pytest.mark.parametrize(
    "change",
    ["chain", "contract", "order", "request", "response", "status"],
)
def test_signature_does_not_move_to_another_context(change: str) -> None:
    """Any change of chain, contract, order, hashes or status changes the signer."""
    domain, key, req, resp, status = _inputs()
    sig = bytes.fromhex(GOLDEN["ethereum"]["signature"][2:])
    if change == "chain":
        domain = rs.EthereumDomain(domain.chain_id + 1, domain.verifying_contract)
    elif change == "contract":
        domain = rs.EthereumDomain(domain.chain_id, "0x" + "22" * 20)
    elif change == "order":
        key = bytes(32)
    elif change == "request":
        req = bytes(32)
    elif change == "response":
        resp = bytes(32)
    else:
        status += 1

    assert rs.recover_eip712_signer(sig, domain, key, req, resp, status) != GOLDEN["signerAddress"]


def test_high_s_twin_and_bad_v_are_rejected() -> None:
    """The contract's rules: no high s, v only 27 or 28."""
    twin = bytes.fromhex(GOLDEN["ethereum"]["highSTwin"][2:])
    sig = bytes.fromhex(GOLDEN["ethereum"]["signature"][2:])

    assert rs.recover_eip712_signer(twin, *_inputs()) is None
    assert rs.recover_eip712_signer(sig[:64] + bytes([sig[64] - 27]), *_inputs()) is None


def test_fabric_signature_verifies_over_sha256_of_the_preimage() -> None:
    """The Fabric signature is DER over SHA-256 of the length-prefixed preimage."""
    fab = GOLDEN["fabric"]
    preimage = bytes.fromhex(fab["preimageHex"])
    pub = coincurve.PublicKey(bytes.fromhex(GOLDEN["publicKeyUncompressedHex"]))

    assert hashlib.sha256(preimage).hexdigest() == fab["digestHex"]
    assert pub.verify(bytes.fromhex(fab["signatureDerHex"]), preimage, hasher=lambda m: hashlib.sha256(m).digest())


def test_fabric_fields_cannot_shift_across_boundaries() -> None:
    """Moving a character from the channel to the chaincode name changes the preimage."""
    h = bytes(32)
    a = rs.fabric_preimage(rs.FabricDomain("ab", "c"), "x", h, h, 0)
    b = rs.fabric_preimage(rs.FabricDomain("a", "bc"), "x", h, h, 0)

    assert a != b
