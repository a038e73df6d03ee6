"""The on-chain result signature: one definition for contracts, workers, tests.

Ethereum: an EIP-712 signature over ``WorkOrderResult(orderKey, requestHash,
responseHash, status)`` in the domain (name, version, chainId,
verifyingContract) of the WorkOrderRegistry that holds the order.
``requestHash`` is the keccak256 the contract stored at submit and
``responseHash`` is keccak256 of the exact response bytes the contract
emits, so a signature binds one order, one contract, one chain and one
response. Encoded on-chain as 65 bytes ``r ‖ s ‖ v`` with v in {27, 28} and
low s (the contract rejects high s).

Fabric: the worker signs, with the same secp256k1 key, SHA-256 of a
preimage that names the channel and chaincode, so a signature cannot move
between channels, chaincodes or requests. Every variable-length field is
length-prefixed, so field boundaries cannot shift (a flaw of EEA's plain
concatenation). The signature is DER, low s.

``contracts/golden/result-signature.json`` freezes both definitions; the
Solidity, Python and chaincode tests all check it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import coincurve
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address

from enclave_bridge.crypto import keccak256

DOMAIN_NAME = "tcbridge WorkOrderRegistry"
DOMAIN_VERSION = "1"

DOMAIN_TYPE = (
    b"EIP712Domain(string name,string version,uint256 chainId,"
    b"address verifyingContract)"
)
RESULT_TYPE = (
    b"WorkOrderResult(bytes32 orderKey,bytes32 requestHash,"
    b"bytes32 responseHash,uint256 status)"
)
DOMAIN_TYPEHASH = keccak256(DOMAIN_TYPE)
RESULT_TYPEHASH = keccak256(RESULT_TYPE)

FABRIC_TAG = b"tcbridge/fabric-result/v1"

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True, slots=True)
class EthereumDomain:
    """Where a result signature is valid: one registry on one chain."""

    chain_id: int
    verifying_contract: str

    def separator(self) -> bytes:
        return _separator(self)


# A worker signs for a handful of domains; recomputing the separator (abi
# encoding, checksum, three keccaks) cost about 70 µs per signature here.
@functools.lru_cache(maxsize=256)
def _separator(domain: EthereumDomain) -> bytes:
    return keccak256(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                DOMAIN_TYPEHASH,
                keccak256(DOMAIN_NAME.encode()),
                keccak256(DOMAIN_VERSION.encode()),
                domain.chain_id,
                to_checksum_address(domain.verifying_contract),
            ],
        )
    )


@dataclass(frozen=True, slots=True)
class FabricDomain:
    """Where a Fabric result signature is valid: one chaincode on one channel."""

    channel: str
    chaincode: str


def order_key(requester: str, work_order_id: bytes) -> bytes:
    """The registry's key for an order: keccak256(abi.encode(sender, id))."""
    return keccak256(abi_encode(["address", "bytes32"], [requester, work_order_id]))


def eip712_digest(
    domain: EthereumDomain,
    order_key: bytes,
    request_hash: bytes,
    response_hash: bytes,
    status: int,
) -> bytes:
    # abi.encode of four bytes32 and a uint256 is five 32-byte words: built
    # by hand, as eth_abi would (bytes padded right, the integer big-endian),
    # because eth_abi cost about 60 µs of the signature here.
    struct_hash = keccak256(
        b"".join(
            (
                RESULT_TYPEHASH,
                _bytes32(order_key),
                _bytes32(request_hash),
                _bytes32(response_hash),
                _uint256(status),
            )
        )
    )
    return keccak256(b"\x19\x01" + domain.separator() + struct_hash)


def _bytes32(value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) > 32:
        raise ValueError("a bytes32 field takes at most 32 bytes")
    return value.ljust(32, b"\x00")


def _uint256(value: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
        raise ValueError("a uint256 field takes an integer in [0, 2**256)")
    return value.to_bytes(32, "big")


# A signing key given as an object skips the public-key derivation that
# building one costs (about 45 µs); the signature is the same.
SigningKey = bytes | coincurve.PrivateKey


def signing_key_object(private_key: SigningKey) -> coincurve.PrivateKey:
    """The key as a ``coincurve.PrivateKey`` (built once, reuse it)."""
    if isinstance(private_key, coincurve.PrivateKey):
        return private_key
    return coincurve.PrivateKey(private_key)


def sign_eip712(
    private_key: SigningKey,
    domain: EthereumDomain,
    order_key: bytes,
    request_hash: bytes,
    response_hash: bytes,
    status: int,
) -> bytes:
    """65-byte ``r ‖ s ‖ v`` signature; coincurve always produces low s."""
    digest = eip712_digest(domain, order_key, request_hash, response_hash, status)
    sig = signing_key_object(private_key).sign_recoverable(digest, hasher=None)
    return sig[:64] + bytes([27 + sig[64]])


def recover_eip712_signer(
    signature: bytes,
    domain: EthereumDomain,
    order_key: bytes,
    request_hash: bytes,
    response_hash: bytes,
    status: int,
) -> str | None:
    """The signer's address, or None where the contract would reject the signature."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        return None
    s = int.from_bytes(signature[32:64], "big")
    if s == 0 or s > SECP256K1_N // 2:
        return None
    digest = eip712_digest(domain, order_key, request_hash, response_hash, status)
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
        )
    except Exception:
        return None
    return address_of_public_key(pub.format(compressed=False))


def address_of_public_key(uncompressed: bytes) -> str:
    """Ethereum address of a 65-byte uncompressed secp256k1 public key."""
    return to_checksum_address(keccak256(uncompressed[1:])[-20:])


def address_of_private_key(private_key: bytes) -> str:
    pub = coincurve.PrivateKey(private_key).public_key.format(compressed=False)
    return address_of_public_key(pub)


def fabric_preimage(
    domain: FabricDomain,
    work_order_id: str,
    request_hash: bytes,
    response_hash: bytes,
    status: int,
) -> bytes:
    """Bytes the worker signs on Fabric (hashed with SHA-256 by the signer)."""
    parts = [FABRIC_TAG]
    for text in (domain.channel, domain.chaincode, work_order_id):
        raw = text.encode()
        parts.append(len(raw).to_bytes(4, "big") + raw)
    if len(request_hash) != 32 or len(response_hash) != 32:
        raise ValueError("request and response hashes must be 32 bytes")
    parts += [request_hash, response_hash, status.to_bytes(4, "big")]
    return b"".join(parts)


def fabric_digest(
    domain: FabricDomain,
    work_order_id: str,
    request_hash: bytes,
    response_hash: bytes,
    status: int,
) -> bytes:
    preimage = fabric_preimage(
        domain, work_order_id, request_hash, response_hash, status
    )
    return hashlib.sha256(preimage).digest()


def sign_fabric(
    private_key: SigningKey,
    domain: FabricDomain,
    work_order_id: str,
    request_hash: bytes,
    response_hash: bytes,
    status: int,
) -> bytes:
    """DER signature, low s, over SHA-256 of :func:`fabric_preimage`."""
    digest = fabric_digest(domain, work_order_id, request_hash, response_hash, status)
    return signing_key_object(private_key).sign(digest, hasher=None)
