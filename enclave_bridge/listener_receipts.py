"""Work-order receipts: the hash recipes the listener checks signatures over.

EEA v1.1 has a requester sign a new receipt and an updater sign each
update, but leaves the bytes to the implementation. Plain concatenation
(EEA's request hash) lets characters move across field boundaries without
changing the hash, so tcbridge hashes a domain tag and every field
length-prefixed:

    lp(s)  = uint32 big-endian byte length of UTF-8(s) ‖ UTF-8(s)
    u32(n) = uint32 big-endian n

    receipt create digest = SHA-256(
        "tcbridge/receipt-create/v1" ‖ lp(workOrderId) ‖ lp(workerServiceId)
        ‖ lp(workerId) ‖ lp(requesterId) ‖ u32(receiptCreateStatus)
        ‖ lp(workOrderRequestHash) ‖ lp(requesterGeneratedNonce))

    receipt update digest = SHA-256(
        "tcbridge/receipt-update/v1" ‖ lp(workOrderId) ‖ lp(updaterId)
        ‖ u32(updateType) ‖ lp(updateData))

Hex ids and hashes enter in lower case (hex of either case names the same
bytes). ``requesterSignature`` / ``updateSignature`` are base64 DER
ECDSA secp256k1 signatures over the 32-byte digest as is (not hashed
again), like EEA's requester signature; high and low S both verify.

Who may sign: a receipt is signed with ``receiptVerificationKey`` (PEM);
when the listener served the work order and its request carried a
``verifyingKey``, the receipt key must be that key and the requester and
request hash must be the order's. An update is signed by the receipt's
requester (with the receipt key) or by its worker (with the worker's
``verificationKey`` from its registered details); anyone else is refused.
A replayed update (same digest) is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import coincurve

from enclave_bridge import crypto
from enclave_bridge.eea import EeaError, parse_request
from enclave_bridge.errors import CryptoError
from enclave_bridge.listener_book import OrderBook, OrderRow
from enclave_bridge.listener_schema import RpcFailure, invalid_params

# EEA's "last update" index for WorkOrderReceiptUpdateRetrieve.
LAST_UPDATE = 0xFFFFFFFF

CREATE_TAG = b"tcbridge/receipt-create/v1"
UPDATE_TAG = b"tcbridge/receipt-update/v1"


def _lp(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "big") + raw


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def receipt_create_digest(params: Mapping[str, Any]) -> bytes:
    """Digest a requester signs for WorkOrderReceiptCreate (see module docstring)."""
    parts = [
        CREATE_TAG,
        _lp(str(params["workOrderId"]).lower()),
        _lp(str(params["workerServiceId"]).lower()),
        _lp(str(params["workerId"]).lower()),
        _lp(str(params["requesterId"]).lower()),
        _u32(int(params["receiptCreateStatus"])),
        _lp(str(params["workOrderRequestHash"]).lower()),
        _lp(str(params["requesterGeneratedNonce"])),
    ]
    return hashlib.sha256(b"".join(parts)).digest()


def receipt_update_digest(params: Mapping[str, Any]) -> bytes:
    """Digest an updater signs for WorkOrderReceiptUpdate (see module docstring)."""
    parts = [
        UPDATE_TAG,
        _lp(str(params["workOrderId"]).lower()),
        _lp(str(params["updaterId"]).lower()),
        _u32(int(params["updateType"])),
        _lp(str(params["updateData"])),
    ]
    return hashlib.sha256(b"".join(parts)).digest()


class ReceiptDesk:
    """The listener's receipt calls, over its order book (see the module docstring)."""

    def __init__(
        self, book: OrderBook, worker: Callable[[str], Mapping[str, Any]]
    ) -> None:
        self.book = book
        # workerId -> its registered record; raises RpcFailure when unknown.
        self._worker = worker

    def create(self, params: Mapping[str, Any]) -> None:
        """Store a receipt whose requester signature verifies."""
        work_order_id = params["workOrderId"]
        try:
            key = crypto.load_verifying_key(params["receiptVerificationKey"])
        except CryptoError:
            raise invalid_params(
                "receiptVerificationKey is not a secp256k1 public key (PEM)",
                work_order_id,
            ) from None

        order = self.book.order(f"wo:{work_order_id.lower()}")
        if order is not None:
            _check_against_order(order, params, key)
        digest = receipt_create_digest(params)
        if not crypto.verify_digest_b64(key, digest, params["requesterSignature"]):
            raise RpcFailure(
                EeaError.INVALID_SIGNATURE,
                "requesterSignature does not verify over the receipt create digest",
                work_order_id=work_order_id,
            )
        if not self.book.add_receipt(work_order_id, params):
            raise invalid_params("a receipt for this work order exists", work_order_id)

    def update(self, params: Mapping[str, Any]) -> None:
        """Append an update signed by the receipt's requester or worker."""
        work_order_id = params["workOrderId"]
        receipt = self._known(work_order_id)
        updater = params["updaterId"].lower()
        if updater == receipt["requesterId"].lower():
            key_pem = receipt["receiptVerificationKey"]
        elif updater == receipt["workerId"].lower():
            type_data = self._worker(receipt["workerId"])["details"].get(
                "workerTypeData", {}
            )
            key_pem = type_data.get("verificationKey", "")
        else:
            raise RpcFailure(
                EeaError.ACCESS_DENIED,
                "only the receipt's requester or worker may update it",
                work_order_id=work_order_id,
            )
        try:
            key = crypto.load_verifying_key(key_pem)
        except CryptoError:
            raise RpcFailure(
                EeaError.INVALID_SIGNATURE,
                "the updater has no usable verification key",
                work_order_id=work_order_id,
            ) from None

        digest = receipt_update_digest(params)
        if not crypto.verify_digest_b64(key, digest, params["updateSignature"]):
            raise RpcFailure(
                EeaError.INVALID_SIGNATURE,
                "updateSignature does not verify over the receipt update digest",
                work_order_id=work_order_id,
            )
        body = {**params, "receiptVerificationKey": key_pem}
        if self.book.add_update(work_order_id, updater, digest, body) is None:
            raise invalid_params("this update was already recorded", work_order_id)

    def retrieve(self, work_order_id: str) -> dict[str, Any]:
        receipt = self._known(work_order_id)
        updates = self.book.updates(work_order_id, None)
        result = {k: v for k, v in receipt.items() if k != "receiptCreateStatus"}
        result["receiptCurrentStatus"] = receipt["receiptCreateStatus"]
        result["updateCount"] = len(updates)
        return result

    def retrieve_update(
        self, work_order_id: str, updater_id: str | None, index: int
    ) -> dict[str, Any]:
        """Update ``index`` (0-based; LAST_UPDATE for the newest), of one updater or all."""
        self._known(work_order_id)
        updates = self.book.updates(work_order_id, updater_id)
        if not updates or (index != LAST_UPDATE and index >= len(updates)):
            raise invalid_params(f"no update {index} for this receipt", work_order_id)
        update = updates[-1] if index == LAST_UPDATE else updates[index]
        return {**update, "updateCount": len(updates)}

    def _known(self, work_order_id: str) -> dict[str, Any]:
        receipt = self.book.receipt(work_order_id)
        if receipt is None:
            raise invalid_params(
                f"no receipt for work order {work_order_id}", work_order_id
            )
        return receipt


def _check_against_order(
    order: OrderRow, params: Mapping[str, Any], key: coincurve.PublicKey
) -> None:
    """A receipt for an order served here must match its requester and request."""
    work_order_id = params["workOrderId"]
    if order.requester_id != params["requesterId"].lower():
        raise RpcFailure(
            EeaError.ACCESS_DENIED,
            "requesterId is not the work order's requester",
            work_order_id=work_order_id,
        )
    # Receipts are rare: the request hash is computed here, not kept per order.
    request_hash = crypto.request_hash(parse_request(order.request)).hex()
    if request_hash != params["workOrderRequestHash"].lower():
        raise invalid_params(
            "workOrderRequestHash is not the work order's request hash",
            work_order_id,
        )
    if order.verifying_key and not _same_key(order.verifying_key, key):
        raise RpcFailure(
            EeaError.ACCESS_DENIED,
            "receiptVerificationKey is not the key that signed the work order",
            work_order_id=work_order_id,
        )


def _same_key(pem: str, key: coincurve.PublicKey) -> bool:
    try:
        return bool(crypto.load_verifying_key(pem).format() == key.format())
    except CryptoError:
        return False
