"""Parsing and validating EEA WorkOrderSubmit requests."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave_bridge.eea import (
    DataItem,
    EeaError,
    Limits,
    WorkOrderStatus,
    decode_base64,
    decode_hex,
    parse_request,
    peek_work_order_id,
)
from enclave_bridge.errors import WorkOrderError
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors

pytestmark = requires_vectors


def base_request() -> dict[str, Any]:
    """A signed request with outData (av13), deep-copied."""
    case_id = next(c for c in vectors.case_ids() if c.startswith("av13"))
    return vectors.load_case(case_id).fresh_request()


DEFAULT_LIMITS = Limits()


def refused(request: Any, limits: Limits = DEFAULT_LIMITS) -> WorkOrderError:
    with pytest.raises(WorkOrderError) as info:
        parse_request(request, limits)
    return info.value


def test_error_codes_are_the_spec_values() -> None:
    """EEA error codes and work-order status codes carry the spec's numbers."""
    assert [int(c) for c in EeaError] == [0, 1, 2, 3, 4, 5, 6]
    assert [int(s) for s in WorkOrderStatus] == [5, 6, 7, 8]


def test_strings_are_kept_as_sent() -> None:
    """Upper- and lower-case hex, URIs and the timeout survive parsing unchanged."""
    request = base_request()
    params = request["params"]

    parsed = parse_request(request)

    assert parsed.session_key_iv == params["sessionKeyIv"]
    assert parsed.session_key_iv.isupper()
    assert parsed.work_order_id == params["workOrderId"]
    assert parsed.result_uri == params["resultUri"]
    assert parsed.response_timeout_msecs == 20000
    assert parsed.jsonrpc_id == request["id"]
    assert parsed.workload_name == "echo-result"
    assert parsed.per_item_ivs is False
    assert (
        parsed.out_data is not None
        and parsed.out_data[0].data == params["outData"][0]["data"]
    )


def test_bare_params_and_bytes_parse_alike() -> None:
    """The params object alone and the JSON bytes give the same request."""
    request = base_request()

    from_params = parse_request(request["params"])
    from_bytes = parse_request(json.dumps(request).encode())

    assert from_params.in_data == from_bytes.in_data
    assert from_params.jsonrpc_id is None
    assert from_bytes.jsonrpc_id == request["id"]


@pytest.mark.parametrize(
    "field",
    [
        "workOrderId",
        "workerId",
        "workloadId",
        "requesterId",
        "requesterNonce",
        "sessionKeyIv",
        "encryptedSessionKey",
        "encryptedRequestHash",
    ],
)
@pytest.mark.parametrize("value", [None, "", "xyz1", "abc", 42])
def test_hex_fields_are_checked(field: str, value: Any) -> None:
    """A missing, empty, non-hex, odd-length or non-string hex field is refused by name."""
    request = base_request()
    if value is None:
        del request["params"][field]
    else:
        request["params"][field] = value

    error = refused(request)

    assert error.code == EeaError.INVALID_PARAMETER
    assert error.field == field
    assert field in str(error)


def test_session_iv_must_be_twelve_bytes() -> None:
    """sessionKeyIv must be 12 bytes of hex."""
    request = base_request()
    request["params"]["sessionKeyIv"] = "AB" * 16

    assert refused(request).field == "sessionKeyIv"


@pytest.mark.parametrize("data", ["abc", "ab-_", "YWJj=", "YW Jj", "@@@@"])
def test_data_must_be_standard_base64(data: str) -> None:
    """Item data must be standard, padded base64."""
    request = base_request()
    request["params"]["inData"][1]["data"] = data

    assert refused(request).field == "inData[1].data"


@pytest.mark.parametrize("index", [-1, True, "0", 1.0, None, 2**31])
def test_index_must_be_a_non_negative_int(index: Any) -> None:
    """An index that is not a non-negative integer is refused."""
    request = base_request()
    request["params"]["inData"][0]["index"] = index

    assert refused(request).field == "inData[0].index"


def test_duplicate_indexes_are_refused() -> None:
    """Two items with one index are refused, naming the second."""
    request = base_request()
    request["params"]["inData"][1]["index"] = 0

    error = refused(request)

    assert error.field == "inData[1].index"
    assert "twice" in str(error)


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (Limits(max_request_bytes=1000), "request"),
        (Limits(max_items=1), "inData"),
        (Limits(max_item_bytes=10), "inData[0].data"),
        (Limits(max_field_chars=100), "workerEncryptionKey"),
    ],
    ids=["request-bytes", "item-count", "item-bytes", "field-chars"],
)
def test_size_limits(limits: Limits, field: str) -> None:
    """Each size limit refuses an oversized request before decoding it."""
    request = base_request()

    assert refused(request, limits).field == field
    assert refused(json.dumps(request).encode(), limits).field == field


def test_items_total_across_in_and_out_data() -> None:
    """The item limit counts inData and outData together."""
    request = base_request()

    assert refused(request, Limits(max_items=2)).field == "inData"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dataEncryptionAlgorithm", "AES-CBC"),
        ("payloadFormat", "XML"),
        ("keyEncryptionAlgorithm", "RSA-OAEP-SHA1"),
    ],
)
def test_unsupported_algorithms(field: str, value: str) -> None:
    """Another data algorithm, payload format or key wrapping is an unsupported mode."""
    request = base_request()
    request["params"][field] = value

    error = refused(request)

    assert error.code == EeaError.UNSUPPORTED_MODE
    assert error.field == field


def test_payload_format_any_case() -> None:
    """payloadFormat matches JSON-RPC in any case, as the C++ worker does."""
    request = base_request()
    request["params"]["payloadFormat"] = "json-rpc"

    assert parse_request(request).payload_format == "json-rpc"


def test_other_method_is_unsupported() -> None:
    """Only WorkOrderSubmit is a work order."""
    request = base_request()
    request["method"] = "WorkerRetrieve"

    assert refused(request).code == EeaError.UNSUPPORTED_MODE


@pytest.mark.parametrize("value", [-1, "6000", 1.5, True])
def test_timeout_must_be_a_non_negative_int(value: Any) -> None:
    """responseTimeoutMSecs is data, but it must be a non-negative integer."""
    request = base_request()
    request["params"]["responseTimeoutMSecs"] = value

    assert refused(request).field == "responseTimeoutMSecs"


def test_per_item_key_needs_an_iv() -> None:
    """A per-item wrapped key without an iv cannot be decrypted and is refused."""
    request = base_request()
    request["params"]["inData"][0]["encryptedDataEncryptionKey"] = "AB" * 40

    assert refused(request).field == "inData[0].iv"


@pytest.mark.parametrize(
    "document",
    [b"[1, 2]", b"\xff\xfe", b"{", "[]", 7],
    ids=["array", "bad-utf8", "cut", "str", "int"],
)
def test_not_an_object(document: Any) -> None:
    """Input that is not a JSON object is refused, not crashed on."""
    assert refused(document).code == EeaError.INVALID_PARAMETER


def _params(request: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = request["params"]
    return params


NON_OBJECT_CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "params-array": lambda r: r.update(params=[1]),
    "inData-string": lambda r: _params(r).update(inData="x"),
    "inData-empty": lambda r: _params(r).update(inData=[]),
    "item-string": lambda r: _params(r)["inData"].__setitem__(0, "x"),
    "outData-object": lambda r: _params(r).update(outData={"index": 0}),
}


@pytest.mark.parametrize("change", list(NON_OBJECT_CHANGES))
def test_non_object_params_and_items(change: str) -> None:
    """params and items must be objects; inData must be a non-empty array."""
    request = base_request()
    NON_OBJECT_CHANGES[change](request)

    assert refused(request).code == EeaError.INVALID_PARAMETER


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (None, "session"),
        ("", "session"),
        ("null", "session"),
        ("-", "plain"),
        ("ABCD", "item"),
    ],
)
def test_item_key_kinds(key: str | None, kind: str) -> None:
    """encryptedDataEncryptionKey selects session key, plaintext or a per-item key."""
    assert DataItem(0, "", encrypted_data_encryption_key=key).key_kind == kind


def test_hash_string_counts_absent_fields_as_empty() -> None:
    """An item's hash string joins dataHash, data, key and iv, absent ones empty."""
    item = DataItem(3, "DATA", data_hash="H", iv="IV")

    assert item.hash_string() == "HDATAIV"


def test_peek_work_order_id() -> None:
    """The id of a request that does not validate can still be read for its error."""
    request = base_request()
    broken = copy.deepcopy(request)
    broken["params"]["inData"] = "nope"

    assert peek_work_order_id(broken) == request["params"]["workOrderId"]
    assert peek_work_order_id(b"not json") is None


@pytest.mark.parametrize(
    "document",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 100_000,
        b'{"params": ' * 40 + b"{}" + b"}" * 40,
    ],
    ids=["balanced", "unclosed", "objects"],
)
def test_deeply_nested_json_is_refused_before_parsing(document: bytes) -> None:
    """Deep nesting is refused by a linear scan, never handed to the recursive parser.

    Some Ethereum libraries raise the recursion limit to 100,000 on import;
    then ``json.loads`` of deep input overflows the C stack and kills the
    process, so this must not reach it.
    """
    error = refused(document)

    assert error.field == "request"
    assert "nested" in str(error)


def test_brackets_inside_strings_do_not_count() -> None:
    """Brackets inside JSON strings, escaped quotes included, are not nesting."""
    request = base_request()
    request["params"]["resultUri"] = '\\"' + "[" * 200 + "{" * 200

    parsed = parse_request(json.dumps(request).encode())

    assert parsed.result_uri == request["params"]["resultUri"]


# The definitions decode_hex and decode_base64 replaced (regular expressions
# then the standard library): the fast checks must accept and refuse alike.
_OLD_HEX = re.compile(r"[0-9a-fA-F]*")
_OLD_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _old_hex(text: str) -> bytes | None:
    if len(text) % 2 or not _OLD_HEX.fullmatch(text):
        return None
    return bytes.fromhex(text)


def _old_base64(text: str) -> bytes | None:
    if len(text) % 4 or not _OLD_B64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return None


def _new(decode: Callable[[str, str], bytes], text: str) -> bytes | None:
    try:
        return decode(text, "field")
    except WorkOrderError as exc:
        assert exc.field == "field"
        return None


_HEX_ALPHABET = "0123456789abcdefABCDEFgG \t\n\r\x0b\x0c-+x\u0660\u00e9"
_B64_ALPHABET = "AZaz09+/=-_ \n\u00e9\u0660"


@given(st.text(alphabet=_HEX_ALPHABET, max_size=12) | st.text(max_size=8))
def test_decode_hex_accepts_and_refuses_as_before(text: str) -> None:
    assert _new(decode_hex, text) == _old_hex(text)


@given(
    st.text(alphabet=_B64_ALPHABET, max_size=12)
    | st.binary(max_size=9).map(lambda b: base64.b64encode(b).decode())
    | st.text(max_size=8)
)
def test_decode_base64_accepts_and_refuses_as_before(text: str) -> None:
    assert _new(decode_base64, text) == _old_base64(text)
