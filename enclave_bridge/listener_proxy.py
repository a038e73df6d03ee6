"""The proxy-model extension of tcbridge's listener: targets, binding, answers.

A bridge that dispatches to a pool on another host (through
:class:`enclave_bridge.remote_pool.RemotePool`) sends, in
``WorkOrderSubmit``:

* ``tcbridgeRequest``: base64 of the exact request bytes the chain holds;
* ``tcbridgeTarget``: where the result goes, as JSON —
  ``{"kind": "ethereum", "chainId", "verifyingContract", "orderKey",
  "requestHash"}`` or ``{"kind": "fabric", "channel", "chaincode",
  "workOrderId", "requestHash"}`` (hashes as 32-byte hex);
* ``tcbridgeOrderKey``: the bridge's order key (idempotency);
* ``tcbridgeMaxSeconds``: the execution cap, optional.

The listener signs only for a target whose ``requestHash`` is keccak-256
(Ethereum) or SHA-256 (Fabric) of exactly those bytes: the contract stored
that hash at submit, so a caller cannot obtain a signature that completes
someone else's order with the answer to another request. The answer gains
``tcbridge``: ``{responseBytes (base64), resultSignature (hex), requestHash
(hex), status, executed, poolFailure}`` — the exact bytes the signature
covers, since re-encoding JSON would change them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from enclave_bridge.crypto import keccak256
from enclave_bridge.errors import ConfigurationError
from enclave_bridge.listener_schema import invalid_params
from enclave_bridge.pool import PoolResult
from enclave_bridge.processor import EthereumTarget, FabricTarget, OracleTarget
from enclave_bridge.result_signature import EthereumDomain, FabricDomain


def proxy_extension(result: PoolResult) -> dict[str, Any]:
    return {
        "responseBytes": base64.b64encode(result.response_bytes).decode(),
        "resultSignature": result.result_signature.hex()
        if result.result_signature is not None
        else None,
        "requestHash": result.request_hash.hex()
        if result.request_hash is not None
        else None,
        "status": result.status,
        "executed": result.executed,
        "poolFailure": result.pool_failure,
    }


def target_to_json(
    target: EthereumTarget | FabricTarget | OracleTarget,
) -> dict[str, Any]:
    """The ``tcbridgeTarget`` JSON of a pool target (used by RemotePool)."""
    if isinstance(target, OracleTarget):
        # The extension carries registry targets only; an oracle result is
        # signed over the plain output, which a remote listener never sees.
        raise ConfigurationError(
            "oracle-contract mode needs the bridge's own enclave pool; a remote"
            " pool cannot sign TrustedOracle results"
        )
    if isinstance(target, EthereumTarget):
        return {
            "kind": "ethereum",
            "chainId": target.domain.chain_id,
            "verifyingContract": target.domain.verifying_contract,
            "orderKey": target.order_key.hex(),
            "requestHash": target.request_hash.hex(),
        }
    return {
        "kind": "fabric",
        "channel": target.domain.channel,
        "chaincode": target.domain.chaincode,
        "workOrderId": target.work_order_id,
        "requestHash": target.request_hash.hex(),
    }


def target_from_json(text: str | None) -> EthereumTarget | FabricTarget | None:
    if not text:
        return None
    try:
        raw = json.loads(text)
        kind = raw["kind"]
        request_hash = _hash32(raw["requestHash"])
        if kind == "ethereum":
            chain_id = raw["chainId"]
            contract = raw["verifyingContract"]
            if not isinstance(chain_id, int) or not isinstance(contract, str):
                raise ValueError("chainId / verifyingContract")
            return EthereumTarget(
                EthereumDomain(chain_id, contract),
                _hash32(raw["orderKey"]),
                request_hash,
            )
        if kind == "fabric":
            names = (raw["channel"], raw["chaincode"], raw["workOrderId"])
            if not all(isinstance(n, str) for n in names):
                raise ValueError("channel / chaincode / workOrderId")
            return FabricTarget(
                FabricDomain(names[0], names[1]), names[2], request_hash
            )
        raise ValueError(f"kind {kind!r}")
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise invalid_params(f"tcbridgeTarget is malformed: {exc}") from None


def _hash32(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("a hash is not a string")
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError("a hash is not 32 bytes")
    return raw


def check_binding(target: EthereumTarget | FabricTarget, request: bytes) -> None:
    """The target's request hash must be the hash of these exact request bytes."""
    if isinstance(target, EthereumTarget):
        actual = keccak256(request)
    else:
        actual = hashlib.sha256(request).digest()
    if not hmac.compare_digest(actual, target.request_hash):
        raise invalid_params(
            "tcbridgeTarget.requestHash is not the hash of tcbridgeRequest: the "
            "listener signs results only for the request the chain holds"
        )
