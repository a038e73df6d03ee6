"""The Chainlink external adapter, mounted on the ops server, in front of a real pool."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from connector.chainlink import AdapterSettings, ChainlinkAdapter
from connector.ops import HealthSnapshot, serve_ops
from enclave_bridge.errors import PoolError
from enclave_bridge.identity import SealedIdentity
from enclave_bridge.pool import EnclavePool, open_pool
from enclave_bridge.requester import SentWorkOrder, WorkerDetails, verify_response
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors
from tests.listener.conftest import POLL_S, POLLS, REGISTRY, Catcher, run_catcher
from tests.pool.conftest import PASSPHRASE

pytestmark = [requires_vectors, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "chainlink-bridge-token-for-tests"
CALLBACK_TOKEN = "chainlink-incoming-token-for-tests"


@dataclass
class Adapter:
    url: str
    adapter: ChainlinkAdapter
    pool: EnclavePool
    catcher: Catcher
    http: aiohttp.ClientSession

    async def post(
        self, body: Any, *, token: str | None = TOKEN, raw: bool = False
    ) -> tuple[int, dict[str, Any]]:
        """POST a job run; returns (HTTP status, decoded answer)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = body if raw else json.dumps(body).encode()
        async with self.http.post(self.url, data=data, headers=headers) as answer:
            return answer.status, await answer.json(content_type=None)


@asynccontextmanager
async def run_adapter(
    tmp_path: Path, sealed: SealedIdentity, **settings: Any
) -> AsyncIterator[Adapter]:
    """A pool, the adapter mounted on the ops server at /chainlink, a catcher on the allow-list."""
    async with (
        run_catcher() as catcher,
        open_pool(
            [sealed], PASSPHRASE, tmp_path / "state.db", processes=1, registry=REGISTRY
        ) as pool,
    ):
        options: dict[str, Any] = {
            "bridge_token": TOKEN,
            "callback_token": CALLBACK_TOKEN,
            "url_allowlist": (catcher.host_port,),
            "pending_after_s": 0.5,
            "execution_timeout_s": 10.0,
            **settings,
        }
        adapter = ChainlinkAdapter(pool, AdapterSettings(**options))
        async with (
            serve_ops(HealthSnapshot, extra=adapter.app()) as base,
            aiohttp.ClientSession() as http,
        ):
            yield Adapter(f"{base}/chainlink/", adapter, pool, catcher, http)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def adapter(
    tmp_path_factory: pytest.TempPathFactory,
    sealed_worker: SealedIdentity,
) -> AsyncIterator[Adapter]:
    """One adapter and pool shared by this module."""
    async with run_adapter(tmp_path_factory.mktemp("chainlink"), sealed_worker) as a:
        yield a


async def test_echo_job_answers_the_result(adapter: Adapter) -> None:
    """A job with workload and inputs gets the verified, decrypted result and the worker's signature."""
    status, answer = await adapter.post(
        {"id": "run-1", "data": {"workload": "echo-result", "inputs": ["hello"]}}
    )

    assert status == 200 and answer["statusCode"] == 200
    assert answer["jobRunID"] == "run-1"
    assert answer["result"] == answer["data"]["result"] == "RESULT: hello"
    assert answer["data"]["workerId"] == vectors.worker()["workerId"]
    assert answer["data"]["workerSignature"]
    assert answer["data"]["workOrderId"]


async def test_price_median_job(adapter: Adapter) -> None:
    """An oracle workload (price-median) through the adapter answers the median as canonical JSON."""
    prices = [
        {"source": s, "price": p} for s, p in (("a", "10"), ("b", "30"), ("c", "20"))
    ]
    status, answer = await adapter.post(
        {"id": 77, "data": {"workload": "price-median", "input": json.dumps(prices)}}
    )

    assert status == 200, answer
    assert answer["jobRunID"] == "77"
    assert json.loads(answer["result"]) == {"count": 3, "median": "20"}


async def test_repeated_id_runs_one_work_order(adapter: Adapter) -> None:
    """A job run id seen before gets the first answer; no second work order reaches the pool."""
    body = {"id": "run-repeat", "data": {"workload": "echo-result", "inputs": ["once"]}}
    first = await adapter.post(body)
    done = adapter.pool.stats().done
    changed = {**body, "data": {"workload": "echo-result", "inputs": ["twice"]}}
    second, third = await asyncio.gather(adapter.post(body), adapter.post(changed))

    assert first == second == third
    assert first[1]["result"] == "RESULT: once"
    assert adapter.pool.stats().done == done
    metrics = adapter.adapter.metrics()
    assert metrics["chainlink_repeats_total"] >= 2
    assert metrics["chainlink_jobs_running"] == 0


async def test_ready_eea_request(
    adapter: Adapter, vector_details: WorkerDetails
) -> None:
    """A ready Avalon request in data.request is run as sent; its EEA result verifies with the requester's keys."""
    case = vectors.load_case("av12-echo-signed")
    status, answer = await adapter.post(
        {"id": "run-ready", "data": {"request": case.request}}
    )

    assert status == 200, answer
    sent = SentWorkOrder.from_request(
        case.request, bytes.fromhex(case.secrets["sessionKeyHex"])
    )
    verdict = verify_response(sent, {"result": answer["result"]}, vector_details)
    assert verdict.accepted, verdict.reason
    assert answer["data"]["workOrderId"] == case.request["params"]["workOrderId"]


# (id, body or raw bytes, token, HTTP status, error name)
ERROR_CASES: list[tuple[str, Any, str | None, int, str]] = [
    ("no-token", {"id": "e1", "data": {}}, None, 401, "Unauthorized"),
    ("wrong-token", {"id": "e2", "data": {}}, "nope", 401, "Unauthorized"),
    ("not-json", b"{not json", TOKEN, 400, "InvalidJSON"),
    ("deep-json", b"[" * 100_000, TOKEN, 400, "InvalidJSON"),
    ("array-body", b"[1, 2]", TOKEN, 400, "InvalidJSON"),
    (
        "missing-id",
        {"data": {"workload": "echo-result", "input": "x"}},
        TOKEN,
        400,
        "MissingJobRunID",
    ),
    ("bool-id", {"id": True, "data": {}}, TOKEN, 400, "MissingJobRunID"),
    ("data-not-object", {"id": "e3", "data": [1]}, TOKEN, 400, "InvalidInput"),
    (
        "no-workload",
        {"id": "e4", "data": {"inputs": ["x"]}},
        TOKEN,
        400,
        "InvalidInput",
    ),
    (
        "inputs-not-strings",
        {"id": "e5", "data": {"workload": "echo-result", "inputs": [1]}},
        TOKEN,
        400,
        "InvalidInput",
    ),
    (
        "request-not-json",
        {"id": "e6", "data": {"request": "{"}},
        TOKEN,
        400,
        "InvalidInput",
    ),
    (
        "unknown-worker",
        {
            "id": "e7",
            "data": {"workload": "echo-result", "input": "x", "workerId": "ab" * 32},
        },
        TOKEN,
        404,
        "UnknownWorker",
    ),
    (
        "unknown-workload",
        {"id": "e8", "data": {"workload": "no-such", "input": "x"}},
        TOKEN,
        422,
        "WorkOrderRefused",
    ),
    (
        "workload-returns-nothing",
        {"id": "e9", "data": {"workload": "test-nothing", "input": "x"}},
        TOKEN,
        422,
        "WorkOrderRefused",
    ),
    (
        "workload-refuses",
        {"id": "e10", "data": {"workload": "price-median", "input": "[]"}},
        TOKEN,
        422,
        "WorkOrderRefused",
    ),
]


@pytest.mark.parametrize(
    ("body", "token", "status", "name"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
async def test_errors_are_named_with_their_status(
    adapter: Adapter, body: Any, token: str | None, status: int, name: str
) -> None:
    """Each cause of failure has its own HTTP status and error name, carries the jobRunID, and no trace."""
    raw = isinstance(body, bytes)
    got, answer = await adapter.post(body, token=token, raw=raw)

    assert (got, answer["statusCode"]) == (status, status)
    assert answer["status"] == "errored"
    assert answer["error"]["name"] == name
    if isinstance(body, dict) and isinstance(body.get("id"), str) and token == TOKEN:
        assert answer["jobRunID"] == body["id"]
    assert "Traceback" not in json.dumps(answer)


async def test_body_over_the_limit(adapter: Adapter) -> None:
    """A body over the adapter's limit (1 MiB) is refused as PayloadTooLarge; 10 MiB too."""
    for size in (1024 * 1024 + 1, 10 * 1024 * 1024):
        body = b'{"id": "big", "data": {"input": "' + b"x" * size + b'"}}'
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with adapter.http.post(
            adapter.url, data=io.BytesIO(body), headers=headers
        ) as answer:
            assert answer.status == 413
            assert (await answer.json())["error"]["name"] == "PayloadTooLarge"


async def test_chunked_body_over_the_limit(adapter: Adapter) -> None:
    """A body without Content-Length is refused once the bytes read pass the limit."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"id": "chunked", "data": {"input": "'
        for _ in range(3):
            yield b"x" * (1024 * 1024)
        yield b'"}}'

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with adapter.http.post(adapter.url, data=chunks(), headers=headers) as answer:
        assert answer.status == 413
        assert (await answer.json())["error"]["name"] == "PayloadTooLarge"


async def test_response_url_off_the_allow_list_is_never_called(
    adapter: Adapter,
) -> None:
    """A responseURL whose host:port is not allow-listed is refused, runs no work order, and gets no request."""
    async with run_catcher() as stranger:
        done = adapter.pool.stats().done
        status, answer = await adapter.post(
            {
                "id": "run-stranger",
                "data": {"workload": "test-sleep", "input": "0.1"},
                "responseURL": stranger.url + "v2/resume/run-stranger",
            }
        )
        await asyncio.sleep(0.5)

        assert status == 403 and answer["error"]["name"] == "ResponseURLNotAllowed"
        assert stranger.seen == []
        assert adapter.pool.stats().done == done


async def test_long_job_answers_pending_then_patches(adapter: Adapter) -> None:
    """A job still running after pending_after_s answers pending at once; the result is PATCHed to responseURL."""
    url = adapter.catcher.url + "v2/resume/run-long"
    status, answer = await adapter.post(
        {
            "id": "run-long",
            "data": {"workload": "test-sleep", "input": "1.0"},
            "responseURL": url,
        }
    )
    assert status == 200
    assert answer == {"jobRunID": "run-long", "pending": True, "statusCode": 200}

    for _ in range(POLLS):
        if any(path == "/v2/resume/run-long" for _, path, _ in adapter.catcher.seen):
            break
        await asyncio.sleep(POLL_S)
    method, _, body = next(
        s for s in adapter.catcher.seen if s[1] == "/v2/resume/run-long"
    )
    patched = json.loads(body)
    assert method == "PATCH"
    assert patched["jobRunID"] == "run-long"
    assert patched["value"] == patched["result"] == "slept"
    assert patched["error"] is None


async def test_worker_that_times_out(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> None:
    """A work order past the execution cap answers WorkOrderTimeout (504)."""
    async with run_adapter(tmp_path, sealed_worker, execution_timeout_s=0.5) as short:
        status, answer = await short.post(
            {"id": "run-timeout", "data": {"workload": "test-sleep", "input": "20"}}
        )

    assert status == 504
    assert answer["error"]["name"] == "WorkOrderTimeout"
    assert answer["jobRunID"] == "run-timeout"


class _BrokenPool:
    """A pool boundary that fails: closed (PoolError) or buggy (any other error)."""

    def __init__(self, error: Exception, records: dict[str, Any]) -> None:
        self.error = error
        self.records = records

    async def submit(self, job: object) -> object:
        await asyncio.sleep(0.2)
        raise self.error

    def worker_records(self) -> dict[str, Any]:
        return self.records


@pytest.mark.parametrize(
    ("error", "status", "name"),
    [
        (PoolError("the enclave pool is not running"), 503, "PoolUnavailable"),
        (RuntimeError("secret internal detail"), 500, "InternalError"),
    ],
    ids=["pool-closed", "bug"],
)
async def test_pool_failures_are_named(
    adapter: Adapter, error: Exception, status: int, name: str
) -> None:
    """A closed pool answers 503 PoolUnavailable; a bug answers 500 without its details, sync or via PATCH."""
    broken = ChainlinkAdapter(
        _BrokenPool(error, adapter.pool.worker_records()),  # type: ignore[arg-type]
        AdapterSettings(
            bridge_token=TOKEN,
            url_allowlist=(adapter.catcher.host_port,),
            pending_after_s=0.05,
        ),
    )
    url = adapter.catcher.url + f"v2/resume/{name}"
    async with serve_ops(HealthSnapshot, extra=broken.app()) as base:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        body = {
            "id": f"broken-{name}",
            "data": {"workload": "echo-result", "input": "x"},
        }
        async with adapter.http.post(
            f"{base}/chainlink/", json=body, headers=headers
        ) as answer:
            assert answer.status == status
            document = await answer.json()
        async with adapter.http.post(
            f"{base}/chainlink/",
            json={**body, "id": f"async-{name}", "responseURL": url},
            headers=headers,
        ) as answer:
            pending = await answer.json()
        for _ in range(POLLS):
            if any(path == f"/v2/resume/{name}" for _, path, _ in adapter.catcher.seen):
                break
            await asyncio.sleep(POLL_S)

    assert document["error"]["name"] == name
    assert "secret internal detail" not in json.dumps(document)
    assert pending["pending"] is True
    patched = json.loads(
        next(b for _, p, b in adapter.catcher.seen if p == f"/v2/resume/{name}")
    )
    assert patched["error"].startswith(name)
    assert patched["value"] is None


async def test_compressed_body_is_refused_unread(adapter: Adapter) -> None:
    """A gzip body (here a 64 MiB bomb of 64 KiB) is refused as UnsupportedEncoding.

    The server does not decompress: the refusal names the encoding, and the
    adapter keeps answering.
    """
    bomb = gzip.compress(b'{"id": "bomb", "data": {"input": "' + b"x" * (64 << 20))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"}
    async with adapter.http.post(adapter.url, data=bomb, headers=headers) as answer:
        assert answer.status == 415
        assert (await answer.json())["error"]["name"] == "UnsupportedEncoding"

    status, after = await adapter.post({"id": "after-bomb", "data": {}})
    assert status == 400 and after["error"]["name"] == "InvalidInput"


async def test_repeated_id_after_a_restart_gets_the_first_answer(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> None:
    """Finished answers outlive the adapter: a new one on the same files answers a repeat unrun."""
    body = {"id": "run-across", "data": {"workload": "echo-result", "inputs": ["kept"]}}
    answers = tmp_path / "var" / "chainlink-answers.db"
    async with run_adapter(tmp_path, sealed_worker, answers_path=answers) as first:
        status, answer = await first.post(body)
        done = first.pool.stats().done
        assert status == 200 and answer["result"] == "RESULT: kept"

        restarted = ChainlinkAdapter(first.pool, first.adapter.settings)
        async with serve_ops(HealthSnapshot, extra=restarted.app()) as base:
            again = await first.http.post(
                f"{base}/chainlink/",
                json={**body, "data": {"workload": "echo-result", "inputs": ["other"]}},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            repeated = await again.json()

        assert again.status == 200
        assert repeated == answer
        assert first.pool.stats().done == done
