"""JSON-RPC envelopes and per-method parameter schemas for the EEA listener.

Every request is checked here before any method runs: the body size, the
JSON nesting depth (measured before ``json.loads``, see
:func:`enclave_bridge.eea._shallow`), the envelope (``jsonrpc``, ``method``,
``id``, ``params``), and the parameters against the method's schema.
A failure is an :class:`RpcFailure` carrying the EEA error code; the
listener turns it into a JSON-RPC error answered with HTTP 200.

Also here: the URL allow-list check that guards every outgoing call to a
requester-supplied URL (``notifyUri``, Chainlink's ``responseURL``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from enclave_bridge.eea import MAX_JSON_DEPTH, EeaError, _shallow
from enclave_bridge.errors import WorkOrderError

# Standard JSON-RPC 2.0 codes, reported next to the EEA code in ``data``.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# JSON-RPC's range for errors an implementation defines: here, an EEA status
# (pending, scheduled, busy) or a refusal that is not about the parameters.
SERVER_ERROR = -32000
# The JSON-RPC code a refusal carries when it names none itself.
JSONRPC_CODE_FOR_EEA = {
    int(EeaError.INVALID_PARAMETER): INVALID_PARAMS,
    int(EeaError.INVALID_SIGNATURE): INVALID_PARAMS,
    int(EeaError.UNKNOWN_ERROR): INTERNAL_ERROR,
}

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# Ids and keys in EEA messages are short; PEM keys and detail blobs are not
# schema-typed strings, they are objects or checked by their consumer.
MAX_STRING_CHARS = 8192


class RpcFailure(WorkOrderError):
    """A request the listener refuses; becomes a JSON-RPC error (HTTP 200).

    A :class:`~enclave_bridge.errors.WorkOrderError`: the caller's input is
    wrong (or not ready yet), and ``code`` is the EEA code it gets back.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        work_order_id: str | None = None,
        jsonrpc_code: int | None = None,
        rpc_id: int | str | None = None,
    ) -> None:
        super().__init__(int(code), message)
        self.message = message
        self.work_order_id = work_order_id
        self.jsonrpc_code = jsonrpc_code
        # The request's id, when the envelope got far enough to show one.
        self.rpc_id = rpc_id


@dataclass(frozen=True, slots=True)
class RpcCall:
    """A well-formed JSON-RPC request."""

    method: str
    rpc_id: int | str
    params: Mapping[str, Any]
    # The body as received (WorkOrderSubmit hands it to the pool unchanged).
    raw: bytes = b""
    # The body decoded: the JSON-RPC object params came from.
    document: Mapping[str, Any] = field(default_factory=dict)


def invalid_params(message: str, work_order_id: str | None = None) -> RpcFailure:
    return RpcFailure(
        EeaError.INVALID_PARAMETER,
        message,
        work_order_id=work_order_id,
        jsonrpc_code=INVALID_PARAMS,
    )


def parse_envelope(raw: bytes) -> RpcCall:
    """The JSON-RPC call in ``raw``, or an RpcFailure saying what is wrong."""
    if not _shallow(raw):
        raise RpcFailure(
            EeaError.INVALID_PARAMETER,
            f"the body is not JSON nested at most {MAX_JSON_DEPTH} levels deep",
            jsonrpc_code=PARSE_ERROR,
        )
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise RpcFailure(
            EeaError.INVALID_PARAMETER,
            "the body is not JSON: send one JSON-RPC 2.0 request object",
            jsonrpc_code=PARSE_ERROR,
        ) from None
    if not isinstance(document, dict):
        raise _bad_envelope("the body is not a JSON-RPC request object")

    work_order_id = _peek_work_order_id(document)
    rpc_id = document.get("id")
    if isinstance(rpc_id, bool) or not isinstance(rpc_id, int | str):
        raise _bad_envelope(
            '"id" is missing or not a number or string (notifications are not '
            "served: every EEA call has an answer)",
            work_order_id,
        )
    if document.get("jsonrpc") != "2.0":
        raise _bad_envelope('"jsonrpc" must be "2.0"', work_order_id, rpc_id)
    method = document.get("method")
    if not isinstance(method, str) or not method:
        raise _bad_envelope(
            '"method" must be a non-empty string', work_order_id, rpc_id
        )
    params = document.get("params", {})
    if not isinstance(params, dict):
        raise _bad_envelope('"params" must be a JSON object', work_order_id, rpc_id)

    return RpcCall(
        method=method, rpc_id=rpc_id, params=params, raw=raw, document=document
    )


def _peek_work_order_id(document: Mapping[str, Any]) -> str | None:
    params = document.get("params")
    if not isinstance(params, Mapping):
        return None
    value = params.get("workOrderId")
    return value if isinstance(value, str) and len(value) <= 256 else None


def _bad_envelope(
    message: str, work_order_id: str | None = None, rpc_id: int | str | None = None
) -> RpcFailure:
    return RpcFailure(
        EeaError.INVALID_PARAMETER,
        message,
        work_order_id=work_order_id,
        jsonrpc_code=INVALID_REQUEST,
        rpc_id=rpc_id,
    )


# --- parameter schemas ---------------------------------------------------------

# Field kinds: "hex" (even-length hex of either case), "str", "b64" (standard
# padded base64, may be empty), "int" (non-negative), "num" (non-negative
# number), "bool", "object",
# "hexlist" (array of hex strings).
Schema = Mapping[str, tuple[str, bool]]


def check_params(
    params: Mapping[str, Any], schema: Schema, *, method: str
) -> dict[str, Any]:
    """The known parameters, typed; unknown ones are refused (typos matter)."""
    work_order_id = params.get("workOrderId")
    if not isinstance(work_order_id, str) or len(work_order_id) > 256:
        work_order_id = None
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise invalid_params(f"{method} has no parameter {unknown[0]!r}", work_order_id)

    out: dict[str, Any] = {}
    for name, (kind, required) in schema.items():
        value = params.get(name)
        if value is None:
            if required:
                raise invalid_params(
                    f"{method}: parameter {name} is required", work_order_id
                )
            continue
        problem = _type_problem(kind, value)
        if problem:
            raise invalid_params(f"{method}: {name} {problem}", work_order_id)
        out[name] = value
    return out


def _type_problem(kind: str, value: Any) -> str | None:
    if kind in ("hex", "str", "b64"):
        if not isinstance(value, str):
            return "must be a string"
        if len(value) > MAX_STRING_CHARS:
            return f"is longer than {MAX_STRING_CHARS} characters"
        if kind == "hex" and not _HEX.fullmatch(value):
            return "must be an even-length hex string"
        if kind == "b64" and not _B64.fullmatch(value):
            return "must be standard padded base64"
        return None
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return "must be an integer"
        if not 0 <= value < 2**32:
            return "must be between 0 and 2**32 - 1"
        return None
    if kind == "num":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return "must be a number"
        if not 0 <= value < 2**32:
            return "must be between 0 and 2**32 - 1"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "object":
        return None if isinstance(value, dict) else "must be a JSON object"
    if kind == "hexlist":
        if not isinstance(value, list) or len(value) > 256:
            return "must be an array of at most 256 hex strings"
        if not all(isinstance(v, str) and _HEX.fullmatch(v) for v in value):
            return "must hold hex strings only"
        return None
    raise ValueError(f"unknown schema kind {kind!r}")


H = ("hex", True)
HO = ("hex", False)
S = ("str", True)
SO = ("str", False)
I = ("int", True)  # noqa: E741 - short names keep the schema table readable
IO = ("int", False)

SCHEMAS: dict[str, Schema] = {
    "WorkerLookUp": {"workerType": IO, "organizationId": HO, "applicationTypeId": HO},
    "WorkerLookUpNext": {
        "workerType": IO,
        "organizationId": HO,
        "applicationTypeId": HO,
        "lookUpTag": S,
    },
    "WorkerRetrieve": {"workerId": H},
    "WorkerRegister": {
        "workerId": H,
        "workerType": I,
        "organizationId": HO,
        "applicationTypeId": ("hexlist", False),
        "details": ("object", True),
    },
    "WorkerUpdate": {"workerId": H, "details": ("object", True)},
    "WorkerSetStatus": {"workerId": H, "status": I},
    "WorkOrderGetResult": {"workOrderId": H, "tcbridgeOrderKey": SO},
    "EncryptionKeyGet": {
        "workerId": H,
        "lastUsedKeyNonce": SO,
        "tag": SO,
        "requesterId": HO,
        "signatureNonce": SO,
        "signature": SO,
    },
    "WorkOrderReceiptCreate": {
        "workOrderId": H,
        "workerServiceId": H,
        "workerId": H,
        "requesterId": H,
        "receiptCreateStatus": I,
        "workOrderRequestHash": H,
        "requesterGeneratedNonce": S,
        "requesterSignature": ("b64", True),
        "signatureRules": SO,
        "receiptVerificationKey": S,
    },
    "WorkOrderReceiptUpdate": {
        "workOrderId": H,
        "updaterId": H,
        "updateType": I,
        "updateData": S,
        "updateSignature": ("b64", True),
        "signatureRules": SO,
    },
    "WorkOrderReceiptRetrieve": {"workOrderId": H},
    "WorkOrderReceiptUpdateRetrieve": {
        "workOrderId": H,
        "updaterId": HO,
        "updateIndex": I,
    },
    "WorkOrderReceiptLookUp": {
        "workerServiceId": HO,
        "workerId": HO,
        "requesterId": HO,
        "receiptStatus": IO,
    },
    "WorkOrderReceiptLookUpNext": {
        "workerServiceId": HO,
        "workerId": HO,
        "requesterId": HO,
        "receiptStatus": IO,
        "lastLookUpTag": S,
    },
    "TcbridgeInfo": {},
}


# --- outgoing URLs -----------------------------------------------------------------


def url_allowed(url: str, allowlist: tuple[str, ...] | list[str]) -> bool:
    """True when ``url`` is http(s) and its host (or host:port) is allow-listed.

    An entry ``host`` allows every port of that host; ``host:port`` allows
    that port only (IPv6 in brackets: ``[::1]:8080``). Hosts compare case-insensitively and exactly: no
    suffix matching, so ``example.com`` does not allow ``evil-example.com``.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return False
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return False
    if parsed.user is not None or parsed.password is not None:
        return False
    host = parsed.host.lower()
    port = parsed.port
    for entry in allowlist:
        entry = entry.strip().lower()
        allowed_host, sep, allowed_port = entry.rpartition(":")
        if sep and allowed_port.isdigit():
            if host == allowed_host.strip("[]") and port == int(allowed_port):
                return True
        elif host == entry.strip("[]"):
            return True
    return False


def body_encoding(headers: Mapping[str, str]) -> str | None:
    """The request's content codings other than identity, else None.

    Every Content-Encoding header counts (aiohttp's headers hold repeats),
    and every coding in each.

    The servers run with aiohttp's decompression off and refuse encoded
    bodies: a 200 KB gzip body inflates to 200 MB, at the cost of the one
    event loop every caller shares, before any size check or token check
    could refuse it.
    """
    getall = getattr(headers, "getall", None)
    values = (
        getall("Content-Encoding", [])
        if getall is not None
        else [headers.get("Content-Encoding", "")]
    )
    codings = [c.strip().lower() for value in values for c in value.split(",")]
    applied = [c for c in codings if c not in ("", "identity")]
    return ", ".join(applied) or None
