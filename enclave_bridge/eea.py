"""EEA v1.1 work orders: typed models, validation, and the EEA status codes.

A WorkOrderSubmit request is parsed into :class:`WorkOrderRequest` with
every string kept exactly as sent: EEA hashes are computed over the JSON
string values, so ``"ABCD"`` and ``"abcd"`` are different requests even
where both decode to the same bytes (Avalon writes some hex upper case and
some lower case). Decoded bytes sit next to the strings they came from.

Parsing never trusts sizes: :class:`Limits` caps the whole request, the
number of data items and the bytes of each item before anything is
decoded. Every problem becomes a :class:`~enclave_bridge.errors.WorkOrderError`
that names the field and carries an EEA error code, so the processor can
answer it as an error result.
"""

from __future__ import annotations

import binascii
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from enclave_bridge.errors import WorkOrderError


class EeaError(IntEnum):
    """General EEA v1.1 error codes (the ``code`` of a JSON-RPC error)."""

    SUCCESS = 0
    UNKNOWN_ERROR = 1
    INVALID_PARAMETER = 2
    ACCESS_DENIED = 3
    INVALID_SIGNATURE = 4
    NO_MORE_LOOKUP_RESULTS = 5
    UNSUPPORTED_MODE = 6


class WorkOrderStatus(IntEnum):
    """Work-order status codes of WorkOrderGetResult while no result exists.

    The spec reuses 5 and 6 here with a meaning of their own: they only
    appear in answers about a work order's progress, never for a request
    that was refused.
    """

    PENDING = 5
    SCHEDULED = 6
    PROCESSING = 7
    BUSY = 8


DATA_ENCRYPTION_ALGORITHM = "AES-GCM-256"
PAYLOAD_FORMAT = "JSON-RPC"

# Explicit key-wrapping field of tcbridge's own requesters; its absence
# means Avalon's implicit RSA-OAEP with SHA-1 and one shared session IV.
KEY_ENCRYPTION_FIELD = "keyEncryptionAlgorithm"
OAEP_SHA256 = "RSA-OAEP-SHA256"

# Values of ``encryptedDataEncryptionKey`` that mean "use the session key".
SESSION_KEY_MARKERS = ("", "null")
# The value that means "not encrypted: data is base64 of the plaintext".
PLAINTEXT_MARKER = "-"

# A WorkOrderSubmit request nests 4 levels; 32 leaves room for extensions.
MAX_JSON_DEPTH = 32
# Possessive quantifiers: no backtracking on long or unterminated strings.
# A string ends at its closing quote or, unterminated, at the end of the
# text: every match then moves forward, and the scan stays linear (without
# the end, each quote of a long unterminated run of \" was tried to the end
# of the text again: 6 s for 64 KiB, measured).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


@dataclass(frozen=True, slots=True)
class Limits:
    """Size caps applied before any decoding or cryptography."""

    # 4 MiB leaves room for a few large inputs while bounding worker memory.
    max_request_bytes: int = 4 * 1024 * 1024
    # Far above any EEA workload seen; each item may cost an RSA operation.
    max_items: int = 64
    # Decoded bytes of one item's data.
    max_item_bytes: int = 1024 * 1024
    # Any id, nonce, key or hash string.
    max_field_chars: int = 4096
    # The whole response a worker signs; a bigger result becomes an error
    # result (the bridge sets it from what one completion transaction carries).
    max_response_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DataItem:
    """One inData or outData item; strings as sent, ``None`` when absent."""

    index: int
    data: str
    data_hash: str | None = None
    encrypted_data_encryption_key: str | None = None
    iv: str | None = None

    @property
    def key_kind(self) -> str:
        """``"plain"``, ``"session"`` or ``"item"`` (a per-item wrapped key)."""
        key = self.encrypted_data_encryption_key
        if key is None or key in SESSION_KEY_MARKERS:
            return "session"
        if key == PLAINTEXT_MARKER:
            return "plain"
        return "item"

    def hash_string(self) -> str:
        """The item's part of an EEA array digest: fields joined, absent = ""."""
        return (
            (self.data_hash or "")
            + self.data
            + (self.encrypted_data_encryption_key or "")
            + (self.iv or "")
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        if self.data_hash is not None:
            out["dataHash"] = self.data_hash
        if self.encrypted_data_encryption_key is not None:
            out["encryptedDataEncryptionKey"] = self.encrypted_data_encryption_key
        if self.iv is not None:
            out["iv"] = self.iv
        out["data"] = self.data
        return out


@dataclass(frozen=True, slots=True)
class WorkOrderRequest:
    """The params of a WorkOrderSubmit request, validated, strings as sent."""

    work_order_id: str
    worker_id: str
    workload_id: str
    requester_id: str
    requester_nonce: str
    session_key_iv: str
    encrypted_session_key: str
    encrypted_request_hash: str
    in_data: tuple[DataItem, ...]
    out_data: tuple[DataItem, ...] | None = None
    response_timeout_msecs: int | None = None
    payload_format: str | None = None
    result_uri: str | None = None
    notify_uri: str | None = None
    worker_encryption_key: str | None = None
    data_encryption_algorithm: str | None = None
    key_encryption_algorithm: str | None = None
    requester_signature: str | None = None
    verifying_key: str | None = None
    # JSON-RPC envelope id when the request came with one.
    jsonrpc_id: Any = None

    @property
    def workload_name(self) -> str | None:
        """The workload name the hex id spells, or None if it is not UTF-8."""
        try:
            return bytes.fromhex(self.workload_id).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def per_item_ivs(self) -> bool:
        """True for tcbridge-style requests: items carry their own IVs."""
        return self.key_encryption_algorithm is not None


@dataclass(frozen=True, slots=True)
class ResponseItem:
    """One outData item of a response, in the C++ worker's field order."""

    index: int
    data_hash: str
    data: str
    encrypted_data_encryption_key: str
    iv: str

    def hash_string(self) -> str:
        return self.data_hash + self.data + self.encrypted_data_encryption_key + self.iv

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "dataHash": self.data_hash,
            "data": self.data,
            "encryptedDataEncryptionKey": self.encrypted_data_encryption_key,
            "iv": self.iv,
        }


@dataclass(frozen=True, slots=True)
class WorkOrderResult:
    """The ``result`` of a successful WorkOrderSubmit / WorkOrderGetResult."""

    work_order_id: str
    workload_id: str
    worker_id: str
    requester_id: str
    worker_nonce: str
    worker_signature: str
    out_data: tuple[ResponseItem, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "workOrderId": self.work_order_id,
            "workloadId": self.workload_id,
            "workerId": self.worker_id,
            "requesterId": self.requester_id,
            "workerNonce": self.worker_nonce,
            "workerSignature": self.worker_signature,
            "outData": [item.to_json() for item in self.out_data],
        }


@dataclass(frozen=True, slots=True)
class WorkOrderErrorBody:
    """The ``error`` of a refused work order."""

    code: int
    message: str
    work_order_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": int(self.code),
            "message": self.message,
            "data": {"workOrderId": self.work_order_id},
        }


def invalid(field: str, message: str) -> WorkOrderError:
    return WorkOrderError(
        EeaError.INVALID_PARAMETER, f"{field}: {message}", field=field
    )


def decode_hex(text: str, field: str) -> bytes:
    """Bytes of a hex string of either case; an error names ``field``."""
    # fromhex refuses every character but hex digits and ASCII whitespace,
    # which it skips: a result of half the text's length proves there was
    # none. Cheaper than a regular expression or a character scan (a
    # request has a dozen hex fields, two of them a kilobyte long).
    if not text:
        return b""
    if not len(text) % 2:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            pass
        else:
            if 2 * len(raw) == len(text):
                return raw
    raise invalid(field, "is not an even-length hex string")


def decode_base64(text: str, field: str) -> bytes:
    """Bytes of standard, padded base64; anything else is refused."""
    # Strict mode refuses what the RFC 4648 alphabet and padding do not allow
    # (other characters, data after padding, a leading '=').
    if not len(text) % 4:
        try:
            return binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
    raise invalid(field, "is not standard padded base64")


@dataclass(frozen=True, slots=True)
class LoadedRequest:
    """Request JSON text already checked against the limits and decoded.

    A pool process reads the routing fields from ``document`` and hands the
    same object to the processor, so the text is decoded once per order.
    """

    document: Any


RawRequest = bytes | str | Mapping[str, Any] | LoadedRequest


def load_request(request: bytes | str, limits: Limits) -> LoadedRequest:
    """Decode JSON text within the size and depth limits; WorkOrderError if not."""
    raw = request.encode() if isinstance(request, str) else request
    if len(raw) > limits.max_request_bytes:
        raise invalid("request", f"is larger than {limits.max_request_bytes} bytes")
    if not _shallow(raw):
        raise invalid("request", f"is not JSON nested at most {MAX_JSON_DEPTH} deep")
    try:
        return LoadedRequest(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        raise invalid("request", "is not JSON") from exc


def split_request(request: RawRequest, limits: Limits) -> tuple[Any, Mapping[str, Any]]:
    """(JSON-RPC id, params) from a JSON-RPC request or bare params."""
    if isinstance(request, bytes | str):
        request = load_request(request, limits)
    if isinstance(request, LoadedRequest):
        request = request.document
    if not isinstance(request, Mapping):
        raise invalid("request", "is not a JSON object")
    if "params" in request:
        params = request["params"]
        if not isinstance(params, Mapping):
            raise invalid("params", "is not a JSON object")
        method = request.get("method", "WorkOrderSubmit")
        if method != "WorkOrderSubmit":
            raise WorkOrderError(
                EeaError.UNSUPPORTED_MODE,
                f"method {method!r} is not WorkOrderSubmit",
                field="method",
            )
        rpc_id = request.get("id")
        if isinstance(rpc_id, bool) or not isinstance(rpc_id, int | str):
            rpc_id = None
        return rpc_id, params
    return None, request


def _shallow(raw: bytes) -> bool:
    """True when JSON text nests at most MAX_JSON_DEPTH levels.

    ``json`` recurses in C once per level; under the high recursion limits
    some Ethereum libraries set on import, deep input can overflow the C
    stack and kill the process instead of raising. So the depth is measured
    first, in linear time: drop strings, map each opening bracket to +1 and
    each closing one to -1, and take the largest running sum.
    """
    # Every bracket counted, strings' too, bounds the depth from above: most
    # requests hold so few that the exact measure is not needed.
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return True
    steps = _JSON_STRING.sub(b"", raw).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    depth = max(itertools.accumulate(memoryview(steps).cast("b")), default=0)
    return depth <= MAX_JSON_DEPTH


def parse_request(request: RawRequest, limits: Limits = Limits()) -> WorkOrderRequest:
    """Validate a WorkOrderSubmit request (JSON-RPC object or params alone)."""
    rpc_id, params = split_request(request, limits)
    if not isinstance(request, bytes | str | LoadedRequest):
        size = _json_size(params)
        if size > limits.max_request_bytes:
            raise invalid("request", f"is larger than {limits.max_request_bytes} bytes")

    fields = _Fields(params, limits)
    hex_ids = {
        name: fields.hex_string(name)
        for name in (
            "workOrderId",
            "workerId",
            "workloadId",
            "requesterId",
            "requesterNonce",
        )
    }
    session_iv = fields.hex_string("sessionKeyIv")
    if len(session_iv) != 24:
        raise invalid("sessionKeyIv", "must be 12 bytes (24 hex digits)")

    algorithm = fields.optional_str("dataEncryptionAlgorithm")
    if algorithm is not None and algorithm != DATA_ENCRYPTION_ALGORITHM:
        raise WorkOrderError(
            EeaError.UNSUPPORTED_MODE,
            f"dataEncryptionAlgorithm: only {DATA_ENCRYPTION_ALGORITHM} is supported",
            field="dataEncryptionAlgorithm",
        )
    payload_format = fields.optional_str("payloadFormat")
    if payload_format is not None and payload_format.upper() != PAYLOAD_FORMAT:
        raise WorkOrderError(
            EeaError.UNSUPPORTED_MODE,
            f"payloadFormat: only {PAYLOAD_FORMAT} is supported",
            field="payloadFormat",
        )
    key_algorithm = fields.optional_str(KEY_ENCRYPTION_FIELD)
    if key_algorithm is not None and key_algorithm != OAEP_SHA256:
        raise WorkOrderError(
            EeaError.UNSUPPORTED_MODE,
            f"{KEY_ENCRYPTION_FIELD}: only {OAEP_SHA256} is supported "
            "(leave the field out for Avalon's RSA-OAEP with SHA-1)",
            field=KEY_ENCRYPTION_FIELD,
        )

    timeout = params.get("responseTimeoutMSecs")
    if timeout is not None and (
        not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0
    ):
        raise invalid("responseTimeoutMSecs", "must be a non-negative integer")

    worker_key = fields.optional_str("workerEncryptionKey")
    if worker_key:
        decode_hex(worker_key, "workerEncryptionKey")
    signature = fields.optional_str("requesterSignature")
    if signature:
        decode_base64(signature, "requesterSignature")

    in_data = _items(params, "inData", limits, required=True) or ()
    out_data = _items(params, "outData", limits, required=False)
    if len(in_data) + len(out_data or ()) > limits.max_items:
        raise invalid("inData", f"more than {limits.max_items} data items in all")

    return WorkOrderRequest(
        work_order_id=hex_ids["workOrderId"],
        worker_id=hex_ids["workerId"],
        workload_id=hex_ids["workloadId"],
        requester_id=hex_ids["requesterId"],
        requester_nonce=hex_ids["requesterNonce"],
        session_key_iv=session_iv,
        encrypted_session_key=fields.hex_string("encryptedSessionKey"),
        encrypted_request_hash=fields.hex_string("encryptedRequestHash"),
        in_data=in_data,
        out_data=out_data,
        response_timeout_msecs=timeout,
        payload_format=payload_format,
        result_uri=fields.optional_str("resultUri"),
        notify_uri=fields.optional_str("notifyUri"),
        worker_encryption_key=worker_key,
        data_encryption_algorithm=algorithm,
        key_encryption_algorithm=key_algorithm,
        requester_signature=signature,
        verifying_key=fields.optional_str("verifyingKey"),
        jsonrpc_id=rpc_id,
    )


def peek_work_order_id(request: RawRequest) -> str | None:
    """workOrderId of a request that may not parse, for its error answer."""
    try:
        _, params = split_request(request, Limits())
    except WorkOrderError:
        return None
    value = params.get("workOrderId")
    return value if isinstance(value, str) and len(value) <= 256 else None


def peek_field(request: RawRequest, name: str) -> Any:
    try:
        rpc_id, params = split_request(request, Limits())
    except WorkOrderError:
        return None
    return rpc_id if name == "id" else params.get(name)


class _Fields:
    def __init__(self, params: Mapping[str, Any], limits: Limits) -> None:
        self.params = params
        self.limits = limits

    def optional_str(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid(name, "must be a string")
        if len(value) > self.limits.max_field_chars:
            raise invalid(
                name, f"is longer than {self.limits.max_field_chars} characters"
            )
        return value

    def hex_string(self, name: str) -> str:
        value = self.optional_str(name)
        if value is None or value == "":
            raise invalid(name, "is required")
        decode_hex(value, name)
        return value


def _items(
    params: Mapping[str, Any], name: str, limits: Limits, *, required: bool
) -> tuple[DataItem, ...] | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise invalid(name, "is required")
        return None
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise invalid(name, "must be an array")
    if required and not raw:
        raise invalid(name, "must hold at least one item")
    if len(raw) > limits.max_items:
        raise invalid(name, f"holds more than {limits.max_items} items")

    items: list[DataItem] = []
    seen: set[int] = set()
    for position, entry in enumerate(raw):
        item = _item(entry, f"{name}[{position}]", limits)
        if item.index in seen:
            raise invalid(
                f"{name}[{position}].index", f"index {item.index} appears twice"
            )
        seen.add(item.index)
        items.append(item)
    return tuple(items)


def _item(entry: Any, where: str, limits: Limits) -> DataItem:
    if not isinstance(entry, Mapping):
        raise invalid(where, "must be an object")
    index = entry.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise invalid(f"{where}.index", "must be a non-negative integer")
    if index >= 2**31:
        raise invalid(f"{where}.index", "is too large")

    def text(key: str) -> str | None:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise invalid(f"{where}.{key}", "must be a string")
        return value

    data = text("data")
    if data is None:
        raise invalid(f"{where}.data", "is required")
    if len(data) > (limits.max_item_bytes + 2) // 3 * 4:
        raise invalid(f"{where}.data", f"is larger than {limits.max_item_bytes} bytes")
    decode_base64(data, f"{where}.data")

    fields: dict[str, str | None] = {}
    for key in ("dataHash", "encryptedDataEncryptionKey", "iv"):
        value = text(key)
        if value is not None and len(value) > limits.max_field_chars:
            raise invalid(f"{where}.{key}", "is too long")
        fields[key] = value
    data_hash = fields["dataHash"]
    if data_hash and len(decode_hex(data_hash, f"{where}.dataHash")) != 32:
        raise invalid(f"{where}.dataHash", "must be a SHA-256 digest in hex")
    iv = fields["iv"]
    if iv and len(decode_hex(iv, f"{where}.iv")) != 12:
        raise invalid(f"{where}.iv", "must be 12 bytes (24 hex digits)")
    wrapped_key = fields["encryptedDataEncryptionKey"]
    if wrapped_key and wrapped_key not in (*SESSION_KEY_MARKERS, PLAINTEXT_MARKER):
        decode_hex(wrapped_key, f"{where}.encryptedDataEncryptionKey")
        if not iv:
            raise invalid(f"{where}.iv", "is required with a per-item data key")

    return DataItem(
        index=index,
        data=data,
        data_hash=data_hash,
        encrypted_data_encryption_key=wrapped_key,
        iv=iv,
    )


def _json_size(value: Any) -> int:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        # A lone surrogate (legal in decoded JSON) counts as its 3 bytes.
        return len(text.encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, RecursionError):
        raise invalid("request", "is not JSON-serialisable") from None
