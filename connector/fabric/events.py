"""Chaincode events of the tcbridge registry, decoded strictly.

Every order event's payload is a JSON object with an ``orders`` array (and
``skipped`` for batch completions); see ``chaincode/README.md``. Anything
else from an order event (an empty payload, bytes that are not UTF-8, JSON
that is not such an object, an order whose ids are missing, null or not
text) becomes a :class:`MalformedEvent` that carries its block, transaction
id and index, so it can be quarantined while the watcher goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SUBMITTED = "WorkOrderSubmitted"
COMPLETED = "WorkOrderCompleted"
CANCELLED = "WorkOrderCancelled"
ORDER_EVENTS = frozenset({SUBMITTED, COMPLETED, CANCELLED})

# The chaincode's batch skip reasons, numbered for the store (which keeps a
# small integer per skip, as the Ethereum registry emits one).
SKIP_REASONS = {
    "malformed-item": 1,
    "unknown-order": 2,
    "already-completed": 3,
    "cancelled": 4,
    "bad-signature": 5,
    "repeated-in-batch": 6,
}
UNKNOWN_SKIP_REASON = 255


@dataclass(frozen=True, slots=True)
class EventRef:
    """Where an event item came from: block, transaction and index in the event."""

    block_number: int
    tx_id: str
    index: int


@dataclass(frozen=True, slots=True)
class OrderSubmitted:
    ref: EventRef
    order_key: str
    work_order_id: str
    worker_id: str
    requester_id: str
    requester_msp: str
    request: bytes


@dataclass(frozen=True, slots=True)
class OrderCompleted:
    ref: EventRef
    order_key: str
    status: int


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    ref: EventRef
    order_key: str


@dataclass(frozen=True, slots=True)
class CompletionSkipped:
    ref: EventRef
    order_key: str
    reason: str

    @property
    def reason_code(self) -> int:
        return SKIP_REASONS.get(self.reason, UNKNOWN_SKIP_REASON)


@dataclass(frozen=True, slots=True)
class MalformedEvent:
    ref: EventRef
    payload: bytes
    reason: str


FabricEvent = (
    OrderSubmitted | OrderCompleted | OrderCancelled | CompletionSkipped | MalformedEvent
)


class _Bad(ValueError):
    pass


def decode_event(
    name: str, payload: bytes, block_number: int, tx_id: str
) -> list[FabricEvent]:
    """The items of one chaincode event; ``[]`` for events that are not about orders."""
    if name not in ORDER_EVENTS:
        return []
    whole = EventRef(block_number, tx_id, 0)
    try:
        document = _document(payload)
        orders = document.get("orders")
        if not isinstance(orders, list):
            raise _Bad("the payload has no 'orders' array")
        skipped = document.get("skipped", [])
        if not isinstance(skipped, list):
            raise _Bad("'skipped' is not an array")
    except _Bad as exc:
        return [MalformedEvent(whole, payload, f"{name}: {exc}")]

    items: list[FabricEvent] = []
    for index, raw in enumerate(orders):
        ref = EventRef(block_number, tx_id, index)
        try:
            items.append(_order_item(name, raw, ref))
        except _Bad as exc:
            items.append(MalformedEvent(ref, payload, f"{name} orders[{index}]: {exc}"))
    for offset, raw in enumerate(skipped):
        ref = EventRef(block_number, tx_id, len(orders) + offset)
        try:
            items.append(CompletionSkipped(ref, _text(raw, "orderKey"), _text(raw, "reason")))
        except _Bad as exc:
            items.append(MalformedEvent(ref, payload, f"{name} skipped[{offset}]: {exc}"))

    return items


def _document(payload: bytes) -> Mapping[str, Any]:
    if not payload:
        raise _Bad("empty payload")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise _Bad(f"payload is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _Bad("payload is not a JSON object")

    return document


def _order_item(name: str, raw: Any, ref: EventRef) -> FabricEvent:
    key = _text(raw, "orderKey")
    _hex32(key, "orderKey")
    if name == SUBMITTED:
        requester = raw.get("requester")
        msp = requester.get("mspId") if isinstance(requester, dict) else None
        if not isinstance(msp, str):
            raise _Bad("requester.mspId is missing")
        return OrderSubmitted(
            ref,
            key,
            _text(raw, "workOrderId"),
            _text(raw, "workerId"),
            _text(raw, "requesterId"),
            msp,
            _utf8(_text(raw, "request")),
        )
    if name == COMPLETED:
        status = raw.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or status < 0:
            raise _Bad("status is not a non-negative integer")
        return OrderCompleted(ref, key, status)

    return OrderCancelled(ref, key)


def _text(raw: Any, field: str) -> str:
    if not isinstance(raw, dict):
        raise _Bad("the item is not a JSON object")
    value = raw.get(field)
    if not isinstance(value, str) or not value:
        found = "null" if value is None else type(value).__name__
        raise _Bad(f"{field} must be non-empty text, found {found}")

    return value


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("request holds a lone surrogate (no UTF-8 form)") from None


def _hex32(value: str, field: str) -> None:
    try:
        ok = len(bytes.fromhex(value)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise _Bad(f"{field} is not 32 bytes of hex")
