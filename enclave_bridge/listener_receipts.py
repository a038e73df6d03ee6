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
from collections.abc import Mapping
from typing import Any

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
