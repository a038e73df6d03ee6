"""The bridge's side of oracle mode: building orders, fulfil calldata, tx routing."""

from __future__ import annotations

import json

import pytest
from eth_abi import decode as abi_decode
from eth_utils import keccak

from connector.ethereum import events as ev
from connector.ethereum.oracle import (
    FULFILL,
    OracleOrderBuilder,
    encode_fulfill_call,
    sent_to,
)
from connector.ethereum.transactions import Completion, TxSigner
from enclave_bridge import crypto
from enclave_bridge.errors import BugError
from enclave_bridge.pool import WorkerPublicRecord
from enclave_bridge.requester import WorkerDetails
from tests.enclave import vectors
from tests.pool.conftest import vector_details  # noqa: F401 - fixture

ORACLE = "0x" + "ab" * 20
SECRET = keccak(b"oracle bridge test secret (public, test only)")
REF = ev.LogRef(7, "0x" + "11" * 32, "0x" + "22" * 32, 0)


@pytest.fixture
def builder(vector_details: WorkerDetails) -> OracleOrderBuilder:  # noqa: F811
    record = WorkerPublicRecord(
        vector_details.worker_id, "0x" + "00" * 20, vectors.worker()
    )
    return OracleOrderBuilder(SECRET, 31337, ORACLE, {record.worker_id: record})


def _event(worker_id: str, request_id: bytes, params: bytes) -> ev.OracleRequested:
    return ev.OracleRequested(
        REF,
        request_id,
        bytes.fromhex(worker_id),
        "0x" + "cd" * 20,
        b"echo-result".ljust(32, b"\0"),
        2**40,
        300_000,
        params,
    )


def test_session_key_of_a_request_is_rederived_for_every_build(
    builder: OracleOrderBuilder,
    vector_details: WorkerDetails,  # noqa: F811
) -> None:
    """Every build of one request uses the session key the bridge re-derives later."""
    request_id = keccak(b"request 1")
    event = _event(vector_details.worker_id, request_id, b'{"inputs":["hi"]}')

    first, second = builder.build(event), builder.build(event)
    other = builder.build(
        _event(vector_details.worker_id, keccak(b"2"), b'{"inputs":["hi"]}')
    )

    for built, rid in (
        (first, request_id),
        (second, request_id),
        (other, keccak(b"2")),
    ):
        params = json.loads(built)["params"]
        assert params["workOrderId"] == rid.hex() and params["requesterSignature"]
        digest = crypto.gcm_decrypt(
            builder.session_key(rid),
            bytes.fromhex(params["sessionKeyIv"]),
            bytes.fromhex(params["encryptedRequestHash"]),
        )
        assert len(digest) == 32
    assert builder.session_key(request_id) != builder.session_key(keccak(b"2"))


@pytest.mark.parametrize(
    "params",
    [b"not json", b"[]", b'{"inputs":[]}', b'{"inputs":[1]}', b'{"inputs":"x"}'],
    ids=["not-json", "not-object", "no-inputs", "not-strings", "not-list"],
)
def test_params_that_do_not_parse_go_to_the_pool_as_they_are(
    builder: OracleOrderBuilder,
    vector_details: WorkerDetails,  # noqa: F811
    params: bytes,
) -> None:
    """Bad params are passed on raw, so the pool answers them with a signed error."""
    event = _event(vector_details.worker_id, keccak(b"bad"), params)

    assert builder.build(event) == params


def test_fulfil_calldata_is_one_item_of_fulfill() -> None:
    """The oracle submitter encodes fulfill(requestId, status, result, signature) for one item."""
    item = Completion(b"\x01" * 32, 3, b"result", b"\x02" * 65)

    data = encode_fulfill_call([item])

    assert data[:4] == FULFILL == keccak(b"fulfill(bytes32,uint256,bytes,bytes)")[:4]
    decoded = abi_decode(["bytes32", "uint256", "bytes", "bytes"], data[4:])
    assert decoded == (item.order_key, 3, b"result", item.signature)
    with pytest.raises(BugError, match="max_items=1"):
        encode_fulfill_call([item, item])


def test_sent_to_reads_the_destination_of_a_signed_transaction() -> None:
    """Submitters sharing a relayer tell their transactions apart by destination."""
    signed = TxSigner(SECRET, 31337).sign(
        nonce=4, to=ORACLE, data=b"\x00", gas=50_000, max_fee=10, max_priority_fee=1
    )

    assert sent_to(signed.raw) == ORACLE
