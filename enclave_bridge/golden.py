"""Writes the golden result-signature file (``python -m enclave_bridge.golden``).

The inputs are fixed, and signing is deterministic (RFC 6979), so the file
only changes when the definition in :mod:`enclave_bridge.result_signature`
changes, which must never happen silently.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import coincurve
from eth_utils.crypto import keccak

from enclave_bridge import result_signature as rs

GOLDEN_PATH = (
    Path(__file__).resolve().parent.parent
    / "contracts"
    / "golden"
    / "result-signature.json"
)

# A published test key: never use it for anything but this file.
GOLDEN_PRIVATE_KEY = keccak(b"tcbridge golden result-signature key (public, test only)")
GOLDEN_REQUESTER = "0x00000000000000000000000000000000000000aa"
GOLDEN_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
GOLDEN_WORK_ORDER_ID = bytes.fromhex("11" * 32)
GOLDEN_REQUEST = b'{"jsonrpc":"2.0","method":"WorkOrderSubmit","id":1,"params":{}}'
GOLDEN_RESPONSE = b'{"jsonrpc":"2.0","id":1,"result":{}}'
GOLDEN_STATUS = 0


def build() -> dict[str, Any]:
    domain = rs.EthereumDomain(chain_id=31337, verifying_contract=GOLDEN_CONTRACT)
    key = rs.order_key(GOLDEN_REQUESTER, GOLDEN_WORK_ORDER_ID)
    request_hash = keccak(GOLDEN_REQUEST)
    response_hash = keccak(GOLDEN_RESPONSE)
    digest = rs.eip712_digest(domain, key, request_hash, response_hash, GOLDEN_STATUS)
    sig = rs.sign_eip712(
        GOLDEN_PRIVATE_KEY, domain, key, request_hash, response_hash, GOLDEN_STATUS
    )
    s = int.from_bytes(sig[32:64], "big")
    high_s_twin = (
        sig[:32] + (rs.SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    )

    fdomain = rs.FabricDomain(channel="mychannel", chaincode="tcbridge")
    f_request_hash = __import__("hashlib").sha256(GOLDEN_REQUEST).digest()
    f_response_hash = __import__("hashlib").sha256(GOLDEN_RESPONSE).digest()
    f_wo_id = GOLDEN_WORK_ORDER_ID.hex()
    preimage = rs.fabric_preimage(
        fdomain, f_wo_id, f_request_hash, f_response_hash, GOLDEN_STATUS
    )
    f_sig = rs.sign_fabric(
        GOLDEN_PRIVATE_KEY,
        fdomain,
        f_wo_id,
        f_request_hash,
        f_response_hash,
        GOLDEN_STATUS,
    )
    pub = coincurve.PrivateKey(GOLDEN_PRIVATE_KEY).public_key

    return {
        "description": (
            "Frozen definition of tcbridge's on-chain result signature. "
            "Regenerate only on purpose with scripts/make-golden-signature."
        ),
        "privateKeyHex": GOLDEN_PRIVATE_KEY.hex(),
        "signerAddress": rs.address_of_private_key(GOLDEN_PRIVATE_KEY),
        "publicKeyUncompressedHex": pub.format(compressed=False).hex(),
        "publicKeyPem": pub_pem(GOLDEN_PRIVATE_KEY),
        "ethereum": {
            "typedData": {
                "types": {
                    "EIP712Domain": [
                        {"name": "name", "type": "string"},
                        {"name": "version", "type": "string"},
                        {"name": "chainId", "type": "uint256"},
                        {"name": "verifyingContract", "type": "address"},
                    ],
                    "WorkOrderResult": [
                        {"name": "orderKey", "type": "bytes32"},
                        {"name": "requestHash", "type": "bytes32"},
                        {"name": "responseHash", "type": "bytes32"},
                        {"name": "status", "type": "uint256"},
                    ],
                },
                "primaryType": "WorkOrderResult",
                "domain": {
                    "name": rs.DOMAIN_NAME,
                    "version": rs.DOMAIN_VERSION,
                    "chainId": domain.chain_id,
                    "verifyingContract": domain.verifying_contract,
                },
                "message": {
                    "orderKey": "0x" + key.hex(),
                    "requestHash": "0x" + request_hash.hex(),
                    "responseHash": "0x" + response_hash.hex(),
                    "status": GOLDEN_STATUS,
                },
            },
            "requester": GOLDEN_REQUESTER,
            "workOrderId": "0x" + GOLDEN_WORK_ORDER_ID.hex(),
            "requestHex": "0x" + GOLDEN_REQUEST.hex(),
            "responseHex": "0x" + GOLDEN_RESPONSE.hex(),
            "domainSeparator": "0x" + domain.separator().hex(),
            "resultTypeHash": "0x" + rs.RESULT_TYPEHASH.hex(),
            "digest": "0x" + digest.hex(),
            "signature": "0x" + sig.hex(),
            "highSTwin": "0x" + high_s_twin.hex(),
        },
        "fabric": {
            "channel": fdomain.channel,
            "chaincode": fdomain.chaincode,
            "workOrderId": f_wo_id,
            "requestHashHex": f_request_hash.hex(),
            "responseHashHex": f_response_hash.hex(),
            "status": GOLDEN_STATUS,
            "preimageHex": preimage.hex(),
            "digestHex": rs.fabric_digest(
                fdomain, f_wo_id, f_request_hash, f_response_hash, GOLDEN_STATUS
            ).hex(),
            "signatureDerHex": f_sig.hex(),
        },
    }


def pub_pem(private_key: bytes) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256K1())
    return (
        priv.public_key()
        .public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


def main() -> None:
    data = build()
    GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN_PATH.write_text(json.dumps(data, indent=2) + "\n")
    sys.stdout.write(f"wrote {GOLDEN_PATH}\n")


if __name__ == "__main__":
    main()
