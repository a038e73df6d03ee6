"""The Solidity ResultSignature library reproduces the golden definition."""

from __future__ import annotations

from eth_utils import keccak

from enclave_bridge.result_signature import EthereumDomain
from tests.contracts.support import GOLDEN, Env

ETH = GOLDEN["ethereum"]
DOMAIN = ETH["typedData"]["domain"]
MESSAGE = ETH["typedData"]["message"]
ZERO_ADDRESS = "0x" + "00" * 20


def b32(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.removeprefix("0x"))


def golden_digest(env: Env) -> bytes:
    separator = env.harness.functions.domainSeparator(
        DOMAIN["chainId"], DOMAIN["verifyingContract"]
    ).call()
    return bytes(
        env.harness.functions.digest(
            separator,
            b32(MESSAGE["orderKey"]),
            b32(MESSAGE["requestHash"]),
            b32(MESSAGE["responseHash"]),
            MESSAGE["status"],
        ).call()
    )


def test_domain_separator_matches_golden(env: Env) -> None:
    """The harness computes the golden domain separator."""
    separator = env.harness.functions.domainSeparator(
        DOMAIN["chainId"], DOMAIN["verifyingContract"]
    ).call()

    assert separator == b32(ETH["domainSeparator"])


def test_result_type_hash_matches_golden(env: Env) -> None:
    """The Solidity type string hashes to the golden type hash."""
    assert env.harness.functions.resultTypeHash().call() == b32(ETH["resultTypeHash"])


def test_digest_matches_golden(env: Env) -> None:
    """The harness computes the golden EIP-712 digest."""
    assert golden_digest(env) == b32(ETH["digest"])


def test_golden_signature_recovers_to_golden_signer(env: Env) -> None:
    """ecrecover through the library yields the golden signer."""
    signer = env.harness.functions.recover(
        golden_digest(env), b32(ETH["signature"])
    ).call()

    assert signer == GOLDEN["signerAddress"]


def test_high_s_twin_is_rejected(env: Env) -> None:
    """The malleable high-S twin of the golden signature recovers to nobody."""
    signer = env.harness.functions.recover(
        golden_digest(env), b32(ETH["highSTwin"])
    ).call()

    assert signer == ZERO_ADDRESS


def test_v_outside_27_28_is_rejected(env: Env) -> None:
    """v = 0, 1 or 29 is refused even where ecrecover would accept 0/1 conventions."""
    good = b32(ETH["signature"])
    for v in (0, 1, 29):
        bad = good[:64] + bytes([v])
        assert (
            env.harness.functions.recover(golden_digest(env), bad).call()
            == ZERO_ADDRESS
        )


def test_wrong_length_is_rejected(env: Env) -> None:
    """A 64-byte (EIP-2098) or 66-byte signature recovers to nobody."""
    good = b32(ETH["signature"])
    for bad in (good[:64], good + b"\x00"):
        assert (
            env.harness.functions.recover(golden_digest(env), bad).call()
            == ZERO_ADDRESS
        )


def test_unrecoverable_signature_yields_zero(env: Env) -> None:
    """r = 0 makes ecrecover fail; the library reports address zero."""
    bad = b"\x00" * 32 + b32(ETH["signature"])[32:]

    assert env.harness.functions.recover(golden_digest(env), bad).call() == ZERO_ADDRESS


def test_registry_domain_separator_is_its_own(env: Env) -> None:
    """The registry's cached separator is the Python definition's for its address and chain."""
    expected = EthereumDomain(env.w3.eth.chain_id, env.orders.address).separator()

    assert env.orders.functions.domainSeparator().call() == expected
    assert expected != keccak(b"")
