"""Locally signed EIP-1559 transactions and registry calldata."""

from __future__ import annotations

from eth_account import Account

from connector.ethereum.transactions import (
    Completion,
    TxSigner,
    encode_complete_batch,
    encode_completion_call,
)


def test_lean_signer_matches_eth_account_byte_for_byte() -> None:
    """The coincurve signer produces the same raw transaction as eth_account."""
    key = bytes.fromhex(
        "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    )
    to = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    data = b"\x01\x02" * 300
    ours = TxSigner(key, 31337).sign(
        nonce=7,
        to=to,
        data=data,
        gas=210_000,
        max_fee=3 * 10**9,
        max_priority_fee=10**9,
    )
    theirs = Account.from_key(key).sign_transaction(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": 7,
            "to": to,
            "value": 0,
            "gas": 210_000,
            "maxFeePerGas": 3 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "data": data,
        }
    )

    assert ours.raw == bytes(theirs.raw_transaction)
    assert ours.hash == "0x" + bytes(theirs.hash).hex()


def test_signer_repr_hides_the_key() -> None:
    """Printing a signer shows its address, never its key."""
    key = bytes.fromhex(
        "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    )

    assert key.hex() not in repr(TxSigner(key, 1))


def test_single_completion_uses_the_cheaper_call() -> None:
    """One item goes out as workOrderComplete, several as a batch."""
    item = Completion(b"\x01" * 32, 0, b"r", b"\x00" * 65)

    assert (
        encode_completion_call([item])[:4] != encode_completion_call([item, item])[:4]
    )
    assert encode_completion_call([item, item]) == encode_complete_batch([item, item])
