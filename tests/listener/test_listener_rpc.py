"""The listener's JSON-RPC surface: malformed input, registry, work orders, limits, load."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from enclave_bridge.eea import EeaError, Limits, WorkOrderStatus
from enclave_bridge.identity import SealedIdentity
from enclave_bridge.requester import WorkerDetails, build_work_order, verify_response
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors
from tests.listener.conftest import (
    ADMIN_TOKEN,
    POLL_S,
    POLLS,
    Harness,
    run_catcher,
    run_listener,
)

pytestmark = [requires_vectors, pytest.mark.asyncio(loop_scope="module")]

WORKER_ID = vectors.worker()["workerId"] if vectors.available() else "00"
BAD_ID = "ab" * 32


def _rpc(method: str, params: Any = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 7}
    if params is not None:
        body["params"] = params
    body.update(extra)
    return json.dumps(body).encode()


def _submit_params(details: WorkerDetails, **changes: Any) -> dict[str, Any]:
    sent = build_work_order(details, "echo-result", [b"x"])
    params = dict(sent.request["params"])
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


# (id, body, EEA code, JSON-RPC code, data.workOrderId)
MALFORMED: list[tuple[str, bytes, int, int | None, str | None]] = [
    ("empty-body", b"", 2, -32700, None),
    ("not-json", b"this is not json", 2, -32700, None),
    ("not-utf8", b"\xff\xfe{}", 2, -32700, None),
    ("deep-nesting", b"[" * 200_000 + b"]" * 200_000, 2, -32700, None),
    ("deep-nesting-unclosed", b'{"a":' * 100_000, 2, -32700, None),
    ("array-body", b"[]", 2, -32600, None),
    (
        "batch-body",
        b'[{"jsonrpc":"2.0","method":"WorkerLookUp","id":1}]',
        2,
        -32600,
        None,
    ),
    ("no-jsonrpc", b'{"method":"WorkerLookUp","id":1}', 2, -32600, None),
    (
        "wrong-jsonrpc",
        b'{"jsonrpc":"1.0","method":"WorkerLookUp","id":1}',
        2,
        -32600,
        None,
    ),
    (
        "missing-id",
        b'{"jsonrpc":"2.0","method":"WorkerLookUp","params":{}}',
        2,
        -32600,
        None,
    ),
    ("bool-id", _rpc("WorkerLookUp", {}, id=True), 2, -32600, None),
    ("object-id", _rpc("WorkerLookUp", {}, id={"a": 1}), 2, -32600, None),
    ("missing-method", b'{"jsonrpc":"2.0","id":1}', 2, -32600, None),
    ("number-method", b'{"jsonrpc":"2.0","id":1,"method":5}', 2, -32600, None),
    ("params-list", _rpc("WorkerLookUp", [1, 2]), 2, -32600, None),
    ("unknown-method", _rpc("WorkerDestroy", {}), 2, -32601, None),
    ("retrieve-missing-worker", _rpc("WorkerRetrieve", {}), 2, -32602, None),
    ("retrieve-worker-int", _rpc("WorkerRetrieve", {"workerId": 5}), 2, -32602, None),
    (
        "retrieve-worker-not-hex",
        _rpc("WorkerRetrieve", {"workerId": "zz"}),
        2,
        -32602,
        None,
    ),
    (
        "retrieve-unknown-param",
        _rpc("WorkerRetrieve", {"workerId": "ab", "x": 1}),
        2,
        -32602,
        None,
    ),
    (
        "retrieve-unknown-worker",
        _rpc("WorkerRetrieve", {"workerId": BAD_ID}),
        2,
        -32602,
        None,
    ),
    ("lookup-type-string", _rpc("WorkerLookUp", {"workerType": "1"}), 2, -32602, None),
    ("lookup-type-negative", _rpc("WorkerLookUp", {"workerType": -1}), 2, -32602, None),
    ("lookup-next-no-tag", _rpc("WorkerLookUpNext", {}), 2, -32602, None),
    ("get-result-no-id", _rpc("WorkOrderGetResult", {}), 2, -32602, None),
    (
        "get-result-unknown",
        _rpc("WorkOrderGetResult", {"workOrderId": BAD_ID}),
        2,
        None,
        BAD_ID,
    ),
    (
        "key-get-unknown-worker",
        _rpc("EncryptionKeyGet", {"workerId": BAD_ID}),
        2,
        -32602,
        None,
    ),
    (
        "receipt-retrieve-unknown",
        _rpc("WorkOrderReceiptRetrieve", {"workOrderId": BAD_ID}),
        2,
        None,
        BAD_ID,
    ),
    ("submit-empty-params", _rpc("WorkOrderSubmit", {}), 2, None, None),
    (
        "submit-id-not-hex",
        _rpc("WorkOrderSubmit", {"workOrderId": "xyz"}),
        2,
        None,
        "xyz",
    ),
    (
        "submit-lone-surrogate-id",
        b'{"jsonrpc":"2.0","method":"WorkOrderSubmit","id":1,"params":{"workOrderId":"\\ud800"}}',
        2,
        None,
        "\ud800",
    ),
]


@pytest.mark.parametrize(
    ("body", "code", "rpc_code", "work_order_id"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
async def test_malformed_requests_get_eea_errors(
    harness: Harness,
    body: bytes,
    code: int,
    rpc_code: int | None,
    work_order_id: str | None,
) -> None:
    """Every malformed call gets HTTP 200 and a JSON-RPC error with the EEA code and workOrderId."""
    answer = await harness.post_raw(body)

    assert "result" not in answer
    assert answer["error"]["code"] == code
    assert answer["error"]["data"]["workOrderId"] == work_order_id
    if rpc_code is not None:
        assert answer["error"]["data"]["jsonrpcCode"] == rpc_code
    assert "Traceback" not in json.dumps(answer)


# (id, change to a valid WorkOrderSubmit's params, EEA code)
BAD_SUBMITS: list[tuple[str, dict[str, Any], int]] = [
    ("missing-inData", {"inData": None}, 2),
    ("inData-not-list", {"inData": "abc"}, 2),
    ("data-not-base64", {"inData": [{"index": 0, "data": "***"}]}, 2),
    ("index-string", {"inData": [{"index": "0", "data": "AA=="}]}, 2),
    ("timeout-negative", {"responseTimeoutMSecs": -1}, 2),
    ("timeout-string", {"responseTimeoutMSecs": "10"}, 2),
    ("iv-wrong-length", {"sessionKeyIv": "00"}, 2),
    ("worker-id-int", {"workerId": 7}, 2),
    ("algorithm-unsupported", {"dataEncryptionAlgorithm": "DES"}, 6),
    ("payload-format-unsupported", {"payloadFormat": "XML"}, 6),
]


@pytest.mark.parametrize(
    ("changes", "code"),
    [case[1:] for case in BAD_SUBMITS],
    ids=[case[0] for case in BAD_SUBMITS],
)
async def test_bad_work_orders_are_refused_with_their_id(
    harness: Harness, vector_details: WorkerDetails, changes: dict[str, Any], code: int
) -> None:
    """A WorkOrderSubmit with a missing or mistyped parameter is refused before the pool, naming its workOrderId."""
    params = _submit_params(vector_details, **changes)
    answer = await harness.call("WorkOrderSubmit", params)

    assert answer["error"]["code"] == code
    assert answer["error"]["data"]["workOrderId"] == params["workOrderId"]
    again = await harness.call(
        "WorkOrderGetResult", {"workOrderId": params["workOrderId"]}
    )
    assert again["error"]["code"] == EeaError.INVALID_PARAMETER


async def test_duplicate_work_order_id_is_refused(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """A second order with a known workOrderId is refused; the first one's result stays served."""
    first = build_work_order(vector_details, "echo-result", [b"one"])
    work_order_id = first.request["params"]["workOrderId"]
    answer = await harness.call("WorkOrderSubmit", first.request["params"])
    assert "result" in answer

    second = build_work_order(
        vector_details, "echo-result", [b"two"], work_order_id=work_order_id
    )
    refused = await harness.call("WorkOrderSubmit", second.request["params"])
    assert refused["error"]["code"] == EeaError.INVALID_PARAMETER
    assert refused["error"]["data"]["workOrderId"] == work_order_id
    assert "already submitted" in refused["error"]["message"]

    kept = await harness.call("WorkOrderGetResult", {"workOrderId": work_order_id})
    assert (
        verify_response(first, kept, vector_details).outputs[0].data == b"RESULT: one"
    )


async def test_workload_that_returns_nothing(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """A workload with no outputs gives a signed EEA error result, not a hang or a 500."""
    sent = build_work_order(vector_details, "test-nothing", [b"anything"])
    answer = await harness.call("WorkOrderSubmit", sent.request["params"])

    assert answer["error"]["code"] == EeaError.UNKNOWN_ERROR
    assert "malformed result" in answer["error"]["message"]
    assert (
        answer["error"]["data"]["workOrderId"] == sent.request["params"]["workOrderId"]
    )


async def test_worker_that_times_out(
    tmp_path: Path, sealed_worker: SealedIdentity, vector_details: WorkerDetails
) -> None:
    """A worker past its cap: submit answers scheduled, polling sees pending, then a signed timeout error."""
    async with run_listener(tmp_path, sealed_worker, default_max_seconds=1.0) as h:
        sent = build_work_order(
            vector_details, "test-sleep", [b"20"], timeout_msecs=200
        )
        work_order_id = sent.request["params"]["workOrderId"]
        first = await h.call("WorkOrderSubmit", sent.request["params"])
        assert first["error"]["code"] == WorkOrderStatus.SCHEDULED
        assert first["error"]["data"]["workOrderId"] == work_order_id

        pending = await h.call("WorkOrderGetResult", {"workOrderId": work_order_id})
        assert pending["error"]["code"] == WorkOrderStatus.PENDING

        for _ in range(POLLS):
            answer = await h.call("WorkOrderGetResult", {"workOrderId": work_order_id})
            if answer["error"]["code"] != WorkOrderStatus.PENDING:
                break
            await asyncio.sleep(POLL_S)
        assert answer["error"]["code"] == EeaError.UNKNOWN_ERROR
        assert "cap" in answer["error"]["message"]
        assert h.pool.stats().timeouts == 1


async def test_zero_timeout_answers_scheduled_at_once(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """responseTimeoutMSecs 0 answers scheduled without waiting; the result arrives by polling."""
    sent = build_work_order(vector_details, "echo-result", [b"later"], timeout_msecs=0)
    work_order_id = sent.request["params"]["workOrderId"]
    answer = await harness.call("WorkOrderSubmit", sent.request["params"])
    assert answer["error"]["code"] == WorkOrderStatus.SCHEDULED

    for _ in range(POLLS):
        answer = await harness.call(
            "WorkOrderGetResult", {"workOrderId": work_order_id}
        )
        if "result" in answer:
            break
        await asyncio.sleep(POLL_S)
    assert verify_response(sent, answer, vector_details).accepted


@pytest.mark.parametrize(
    ("size", "accepted"),
    [(1024 * 1024, True), (10 * 1024 * 1024, False)],
    ids=["1MiB", "10MiB"],
)
async def test_body_size_against_the_limit(
    harness: Harness, vector_details: WorkerDetails, size: int, accepted: bool
) -> None:
    """A 1 MiB order runs and verifies; a 10 MiB body is refused by Content-Length (4 MiB limit)."""
    payload = b"p" * (min(size, 1024 * 1024) * 3 // 4 - 4096)
    sent = build_work_order(vector_details, "echo-result", [payload])
    body = json.dumps(sent.request).encode()
    if accepted:
        assert len(body) <= size
        answer = await harness.post_raw(body)
        verdict = verify_response(sent, answer, vector_details)
        assert verdict.accepted, verdict.reason
        assert verdict.outputs[0].data == b"RESULT: " + payload
    else:
        body = body + b" " * (size - len(body))
        answer = await harness.post_raw(io.BytesIO(body))
        assert answer["error"]["code"] == EeaError.INVALID_PARAMETER
        assert "at most 4194304 bytes" in answer["error"]["message"]


async def test_chunked_body_over_the_limit_is_counted(harness: Harness) -> None:
    """A body sent without Content-Length is refused once the bytes read pass the limit."""

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * (1024 * 1024)

    answer = await harness.post_raw(chunks())
    assert answer["error"]["code"] == EeaError.INVALID_PARAMETER
    assert "at most 4194304 bytes" in answer["error"]["message"]


async def test_admin_methods_need_the_token(harness: Harness) -> None:
    """WorkerRegister, WorkerUpdate and WorkerSetStatus are refused without the admin bearer token."""
    worker_id = "cd" * 32
    params = {"workerId": worker_id, "workerType": 1, "details": {"a": 1}}
    for token in (None, "wrong"):
        answer = await harness.call("WorkerRegister", params, token=token)
        assert answer["error"]["code"] == EeaError.ACCESS_DENIED
        answer = await harness.call(
            "WorkerSetStatus", {"workerId": WORKER_ID, "status": 2}, token=token
        )
        assert answer["error"]["code"] == EeaError.ACCESS_DENIED
        answer = await harness.call(
            "WorkerUpdate", {"workerId": WORKER_ID, "details": {}}, token=token
        )
        assert answer["error"]["code"] == EeaError.ACCESS_DENIED
    retrieved = await harness.call("WorkerRetrieve", {"workerId": worker_id})
    assert retrieved["error"]["code"] == EeaError.INVALID_PARAMETER

    done = await harness.call("WorkerRegister", params, token=ADMIN_TOKEN)
    assert done["error"]["code"] == EeaError.SUCCESS
    again = await harness.call("WorkerRegister", params, token=ADMIN_TOKEN)
    assert again["error"]["code"] == EeaError.INVALID_PARAMETER
    retrieved = await harness.call("WorkerRetrieve", {"workerId": worker_id})
    assert retrieved["result"]["details"] == {"a": 1}


async def test_status_and_update_of_a_pool_worker(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """An offline worker takes no orders; an update cannot replace a pool worker's keys."""
    offline = await harness.call(
        "WorkerSetStatus", {"workerId": WORKER_ID, "status": 2}, token=ADMIN_TOKEN
    )
    assert offline["error"]["code"] == EeaError.SUCCESS
    try:
        sent = build_work_order(vector_details, "echo-result", [b"x"])
        refused = await harness.call("WorkOrderSubmit", sent.request["params"])
        assert refused["error"]["code"] == EeaError.INVALID_PARAMETER
        assert "not active" in refused["error"]["message"]
    finally:
        await harness.call(
            "WorkerSetStatus", {"workerId": WORKER_ID, "status": 1}, token=ADMIN_TOKEN
        )

    forged = {"workOrderSyncUri": "x", "workerTypeData": {"encryptionKey": "forged"}}
    updated = await harness.call(
        "WorkerUpdate", {"workerId": WORKER_ID, "details": forged}, token=ADMIN_TOKEN
    )
    assert updated["error"]["code"] == EeaError.SUCCESS
    retrieved = await harness.call("WorkerRetrieve", {"workerId": WORKER_ID})
    details = retrieved["result"]["details"]
    assert details["workOrderSyncUri"] == "x"
    assert (
        details["workerTypeData"]["encryptionKey"] == vector_details.encryption_key_pem
    )


async def test_lookup_pages_with_the_tag(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> None:
    """WorkerLookUp pages by lookupTag and WorkerLookUpNext continues to the end."""
    async with run_listener(tmp_path, sealed_worker, lookup_page_size=2) as h:
        for n in range(4):
            await h.call(
                "WorkerRegister",
                {"workerId": f"{n:02x}" * 32, "workerType": 2, "details": {}},
                token=ADMIN_TOKEN,
            )
        first = (await h.call("WorkerLookUp", {"workerType": 2}))["result"]
        assert first["totalCount"] == 4 and len(first["ids"]) == 2
        second = (
            await h.call(
                "WorkerLookUpNext", {"workerType": 2, "lookUpTag": first["lookupTag"]}
            )
        )["result"]
        assert second["lookupTag"] == ""
        assert first["ids"] + second["ids"] == [f"{n:02x}" * 32 for n in range(4)]


async def test_notify_uri_off_the_allow_list_is_never_called(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """A notifyUri whose host:port is not allow-listed gets no request; an allowed one gets one POST."""
    async with run_catcher() as stranger:
        blocked_before = harness.listener.stats.notifications_blocked
        sent = build_work_order(
            vector_details, "echo-result", [b"n"], notify_uri=stranger.url + "notify"
        )
        answer = await harness.call("WorkOrderSubmit", sent.request["params"])
        assert "result" in answer
        await asyncio.sleep(0.3)
        assert stranger.seen == []
        assert harness.listener.stats.notifications_blocked == blocked_before + 1

    allowed = build_work_order(
        vector_details, "echo-result", [b"n"], notify_uri=harness.catcher.url + "hook"
    )
    answer = await harness.call("WorkOrderSubmit", allowed.request["params"])
    assert "result" in answer
    for _ in range(POLLS):
        if harness.catcher.seen:
            break
        await asyncio.sleep(POLL_S)
    method, path, body = harness.catcher.seen[-1]
    assert (method, path) == ("POST", "/hook")
    assert json.loads(body) == {
        "workOrderId": allowed.request["params"]["workOrderId"],
        "status": 0,
    }


async def test_two_hundred_simultaneous_requests(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """200 simultaneous calls (160 synchronous work orders, 40 lookups) are all answered correctly."""
    orders = [
        build_work_order(
            vector_details, "echo-result", [f"load {n}".encode()], timeout_msecs=60_000
        )
        for n in range(160)
    ]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        load = Harness(
            harness.url, harness.listener, harness.pool, http, harness.catcher
        )
        calls = [
            load.call("WorkOrderSubmit", sent.request["params"]) for sent in orders
        ]
        calls += [
            load.call("WorkerRetrieve", {"workerId": WORKER_ID}) for _ in range(40)
        ]
        answers = await asyncio.gather(*calls)

    for n, (sent, answer) in enumerate(zip(orders, answers, strict=False)):
        verdict = verify_response(sent, answer, vector_details)
        assert verdict.accepted, verdict.reason
        assert verdict.outputs[0].data == f"RESULT: load {n}".encode()
    for answer in answers[160:]:
        assert answer["result"]["status"] == 1
    metrics = harness.listener.metrics()
    assert metrics["listener_orders_running"] == 0
    assert metrics["listener_orders_submitted_total"] >= 160


async def test_busy_past_the_in_flight_caps(
    tmp_path: Path, sealed_worker: SealedIdentity, vector_details: WorkerDetails
) -> None:
    """Past the per-requester and overall caps a submit answers BUSY and runs nothing."""
    async with run_listener(
        tmp_path, sealed_worker, max_in_flight_per_requester=2, max_running_orders=3
    ) as h:
        requester = "aa" * 32

        def order(requester_id: str) -> dict[str, Any]:
            sent = build_work_order(
                vector_details,
                "test-sleep",
                [b"0.5"],
                requester_id=requester_id,
                timeout_msecs=0,
            )
            return dict(sent.request["params"])

        for _ in range(2):
            answer = await h.call("WorkOrderSubmit", order(requester))
            assert answer["error"]["code"] == WorkOrderStatus.SCHEDULED
        busy = await h.call("WorkOrderSubmit", order(requester))
        assert busy["error"]["code"] == WorkOrderStatus.BUSY
        assert "in flight" in busy["error"]["message"]

        other = await h.call("WorkOrderSubmit", order("bb" * 32))
        assert other["error"]["code"] == WorkOrderStatus.SCHEDULED
        full = await h.call("WorkOrderSubmit", order("cc" * 32))
        assert full["error"]["code"] == WorkOrderStatus.BUSY
        assert h.listener.stats.orders_submitted == 3


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/"), ("POST", "/other"), ("PUT", "/")]
)
async def test_other_methods_and_paths(
    harness: Harness, method: str, path: str
) -> None:
    """Anything but POST / gets a JSON-RPC error with HTTP 200, not an HTML page."""
    url = harness.url.rstrip("/") + path
    async with harness.http.request(method, url, data=b"{}") as answer:
        assert answer.status == 200
        document = await answer.json()

    assert document["error"]["code"] == EeaError.INVALID_PARAMETER
    assert "POST JSON-RPC to /" in document["error"]["message"]


async def test_an_order_is_written_before_any_answer_about_it(
    tmp_path: Path, sealed_worker: SealedIdentity, vector_details: WorkerDetails
) -> None:
    """The book writes behind, yet a submitted order is on disk when its answer arrives.

    Both for a synchronous result and for a "scheduled" answer: a listener
    that crashed right after answering would still resume or serve it.
    """
    async with run_listener(tmp_path, sealed_worker) as h:
        for timeout_ms, expect in ((60_000, "result"), (0, "error")):
            sent = build_work_order(
                vector_details, "echo-result", [b"durable"], timeout_msecs=timeout_ms
            )
            work_order_id = sent.request["params"]["workOrderId"]
            answer = await h.call("WorkOrderSubmit", sent.request["params"])
            with sqlite3.connect(tmp_path / "listener.db") as other:
                on_disk = other.execute(
                    "SELECT work_order_id FROM orders WHERE key = ?",
                    (f"wo:{work_order_id.lower()}",),
                ).fetchall()

            assert expect in answer
            assert on_disk == [(work_order_id,)]


async def test_compressed_body_is_refused_unread(harness: Harness) -> None:
    """A gzip body (a 64 MiB bomb of 64 KiB) is refused by its Content-Encoding, not inflated."""
    bomb = gzip.compress(
        b'{"jsonrpc":"2.0","id":1,"method":"WorkerLookUp","params":{"pad":"'
        + b"x" * (64 << 20)
    )
    answer = await harness.post_raw(bomb, **{"Content-Encoding": "gzip"})

    assert answer["error"]["code"] == EeaError.INVALID_PARAMETER
    assert answer["error"]["data"]["jsonrpcCode"] == -32600
    assert "Content-Encoding 'gzip' is not accepted" in answer["error"]["message"]
    lookup = await harness.call("WorkerLookUp", {"workerType": 1})
    assert WORKER_ID in lookup["result"]["ids"]


@pytest.mark.parametrize(
    ("method", "params", "token", "jsonrpc_code"),
    [
        ("WorkOrderSubmit", {}, None, -32602),
        ("WorkerSetStatus", {"workerId": "aa", "status": 2}, None, -32000),
        ("WorkOrderGetResult", {"workOrderId": "ab" * 32}, None, -32602),
    ],
    ids=["submit-invalid", "admin-without-token", "unknown-order"],
)
async def test_every_refusal_names_a_jsonrpc_code(
    harness: Harness,
    method: str,
    params: dict[str, Any],
    token: str | None,
    jsonrpc_code: int,
) -> None:
    """data.jsonrpcCode is in every refusal, as the README promises."""
    answer = await harness.call(method, params, token=token)
    assert answer["error"]["data"]["jsonrpcCode"] == jsonrpc_code


async def test_scheduled_answer_says_an_off_list_notify_uri_is_not_called(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """Avalon sends notifyUri freely, so the order runs; a "scheduled" answer says no call will come."""
    async with run_catcher() as stranger:
        sent = build_work_order(
            vector_details,
            "echo-result",
            [b"n"],
            notify_uri=stranger.url + "notify",
            timeout_msecs=0,
        )
        answer = await harness.call("WorkOrderSubmit", sent.request["params"])
        assert answer["error"]["code"] == WorkOrderStatus.SCHEDULED
        assert "will not be called" in answer["error"]["message"]
        await asyncio.sleep(0.3)
        assert stranger.seen == []


async def test_order_over_the_pool_cap_is_refused_before_it_is_stored(
    tmp_path: Path, sealed_worker: SealedIdentity, vector_details: WorkerDetails
) -> None:
    """The listener applies its pool's per-order cap, not only its larger body limit."""
    async with run_listener(
        tmp_path, sealed_worker, work_order_limits=Limits(max_request_bytes=65_536)
    ) as h:
        sent = build_work_order(vector_details, "echo-result", [b"D" * 70_000])
        work_order_id = sent.request["params"]["workOrderId"]
        done = h.pool.stats().done

        answer = await h.call("WorkOrderSubmit", sent.request["params"])
        later = await h.call("WorkOrderGetResult", {"workOrderId": work_order_id})

        assert answer["error"]["code"] == EeaError.INVALID_PARAMETER
        assert "at most 65536 bytes per work order" in answer["error"]["message"]
        assert answer["error"]["data"]["workOrderId"] == work_order_id
        assert "no work order" in later["error"]["message"]
        assert h.pool.stats().done == done
        small = build_work_order(vector_details, "echo-result", [b"small"])
        assert "result" in await h.call("WorkOrderSubmit", small.request["params"])


async def test_an_id_used_again_after_pruning_gets_its_own_result(
    tmp_path: Path, sealed_worker: SealedIdentity, vector_details: WorkerDetails
) -> None:
    """Once an answered order left the book, its id may come back: it runs anew."""
    async with run_listener(tmp_path, sealed_worker, keep_answered_s=0) as h:
        first = build_work_order(vector_details, "echo-result", [b"first"])
        work_order_id = first.request["params"]["workOrderId"]
        assert "result" in await h.call("WorkOrderSubmit", first.request["params"])
        h.listener.book.flush()
        assert h.listener.book.prune_answered(time.time() + 1) == 1

        again = build_work_order(
            vector_details, "echo-result", [b"again"], work_order_id=work_order_id
        )
        answer = await h.call("WorkOrderSubmit", again.request["params"])

        verdict = verify_response(again, answer, vector_details)
        assert verdict.accepted, verdict.reason
        assert verdict.outputs[0].data == b"RESULT: again"


async def test_body_limit_follows_the_pool_cap(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> None:
    """With a 64 KiB per-order cap, a 200 KB body is refused unread, whatever max_body_bytes says."""
    async with run_listener(
        tmp_path, sealed_worker, work_order_limits=Limits(max_request_bytes=65_536)
    ) as h:
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "WorkerLookUp",
                "params": {"pad": "x" * 200_000},
            }
        ).encode()
        answer = await h.post_raw(body)
        assert answer["error"]["code"] == EeaError.INVALID_PARAMETER
        assert "takes at most 152917 bytes" in answer["error"]["message"]


async def test_order_for_an_unknown_worker_is_refused_at_submit(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """A workerId the service does not serve is refused with code 2, not scheduled and stored."""
    sent = build_work_order(vector_details, "echo-result", [b"x"], timeout_msecs=0)
    params = dict(sent.request["params"], workerId="ab" * 32)
    answer = await harness.call("WorkOrderSubmit", params)

    assert answer["error"]["code"] == EeaError.INVALID_PARAMETER
    assert "is not a worker of this service" in answer["error"]["message"]
    assert answer["error"]["data"]["workOrderId"] == params["workOrderId"]
    later = await harness.call(
        "WorkOrderGetResult", {"workOrderId": params["workOrderId"]}
    )
    assert "no work order" in later["error"]["message"]
