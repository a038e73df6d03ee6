"""RemotePool: the direct and proxy models against a tcbridge listener, and an Avalon-only one."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from eth_utils.crypto import keccak

from enclave_bridge.errors import ConfigurationError, PoolError
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.pool import PoolJob
from enclave_bridge.processor import EthereumTarget
from enclave_bridge.remote_pool import open_remote_pool
from enclave_bridge.requester import (
    SentWorkOrder,
    WorkerDetails,
    build_work_order,
    verify_response,
)
from enclave_bridge.result_signature import EthereumDomain, recover_eip712_signer
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors
from tests.listener.conftest import PROXY_TOKEN, Harness

pytestmark = [requires_vectors, pytest.mark.asyncio(loop_scope="module")]

DOMAIN = EthereumDomain(31337, "0x" + "42" * 20)


def _job(sent: SentWorkOrder, key: str, *, target: bool) -> PoolJob:
    request = json.dumps(sent.request, separators=(",", ":")).encode()
    chain_target = None
    if target:
        chain_target = EthereumTarget(DOMAIN, keccak(key.encode()), keccak(request))
    return PoolJob(order_key=key, request=request, target=chain_target, max_seconds=10)


async def test_direct_model_through_a_remote_tcbridge_listener(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """A job without a target runs remotely by WorkOrderSubmit, verifies, and a retry gets the same answer."""
    async with open_remote_pool(harness.url) as remote:
        assert remote.is_tcbridge
        record = remote.worker_records()[vector_details.worker_id]
        assert record.signing_address == vectors.worker_keys().signing_address
        sent = build_work_order(vector_details, "echo-result", [b"far away"])
        job = _job(sent, "remote:direct:1", target=False)
        result = await remote.submit(job)
        again = await remote.submit(job)
        stats = remote.stats()
        assert (stats.done, stats.failed, stats.in_flight) == (2, 0, 0)
        assert remote.size * remote.depth >= 1

    assert result.executed and not again.executed
    assert again.response_bytes == result.response_bytes
    assert result.response["id"] == sent.request["id"]

    assert result.status == 0
    assert result.result_signature is None
    assert result.request_hash == sent.request_hash
    verdict = verify_response(sent, result.response, vector_details)
    assert verdict.accepted, verdict.reason
    assert verdict.outputs[0].data == b"RESULT: far away"


async def test_proxy_model_returns_the_signed_exact_bytes(
    harness: Harness, vector_details: WorkerDetails, vector_keys: WorkerKeys
) -> None:
    """A job with an EIP-712 target gets the exact response bytes and a result signature by the worker."""
    async with open_remote_pool(
        harness.url, proxy=True, proxy_token=PROXY_TOKEN
    ) as remote:
        sent = build_work_order(vector_details, "echo-result", [b"on chain"])
        job = _job(sent, "remote:proxy:1", target=True)
        result = await remote.submit(job)
        again = await remote.submit(job)

    assert result.status == 0 and result.result_signature is not None
    assert isinstance(job.target, EthereumTarget)
    signer = recover_eip712_signer(
        result.result_signature,
        DOMAIN,
        job.target.order_key,
        job.target.request_hash,
        keccak(result.response_bytes),
        result.status,
    )
    assert signer == vector_keys.signing_address
    assert verify_response(sent, result.response, vector_details).accepted
    assert again.response_bytes == result.response_bytes
    assert again.result_signature == result.result_signature


async def test_proxy_model_refuses_a_target_for_other_bytes(
    harness: Harness, vector_details: WorkerDetails
) -> None:
    """The listener signs only when the target's requestHash is the keccak of the bytes sent."""
    sent = build_work_order(vector_details, "echo-result", [b"x"])
    job = _job(sent, "remote:proxy:forged", target=True)
    assert isinstance(job.target, EthereumTarget)
    forged = PoolJob(
        order_key=job.order_key,
        request=job.request,
        target=EthereumTarget(DOMAIN, job.target.order_key, keccak(b"other")),
    )
    async with open_remote_pool(
        harness.url, proxy=True, proxy_token=PROXY_TOKEN
    ) as remote:
        with pytest.raises(PoolError, match="requestHash is not the hash"):
            await remote.submit(forged)


async def test_proxy_model_needs_the_token(harness: Harness) -> None:
    """Without the proxy token the proxy model is refused at configuration, and a wrong one by the listener."""
    with pytest.raises(ConfigurationError, match="proxy token"):
        async with open_remote_pool(harness.url, proxy=True):
            pass
    async with open_remote_pool(harness.url, proxy=True, proxy_token="wrong") as remote:
        sent = build_work_order(vectors_details(), "echo-result", [b"x"])
        with pytest.raises(PoolError, match="bearer token"):
            await remote.submit(_job(sent, "remote:proxy:token", target=True))


def vectors_details() -> WorkerDetails:
    return WorkerDetails.from_json(vectors.worker())


@asynccontextmanager
async def avalon_listener() -> AsyncIterator[str]:
    """A stand-in for Avalon's listener: its vector answers, and -32601 for methods it lacks."""
    worker = vectors.worker()
    responses = {
        case.request["params"]["workOrderId"]: case.response for case in vectors.cases()
    }

    async def rpc(request: web.Request) -> web.Response:
        call = await request.json()
        method, params = call["method"], call.get("params", {})
        answer: dict[str, Any]
        if method == "WorkerLookUp":
            answer = {
                "result": {
                    "totalCount": 1,
                    "lookupTag": "",
                    "ids": [worker["workerId"]],
                }
            }
        elif method == "WorkerRetrieve":
            answer = dict(worker["workerRetrieveResponse"])
        elif method == "WorkOrderSubmit" and params.get("workOrderId") in responses:
            answer = dict(responses[params["workOrderId"]])
        else:
            answer = {"error": {"code": -32601, "message": "Method not found"}}
        return web.json_response({**answer, "jsonrpc": "2.0", "id": call["id"]})

    app = web.Application()
    app.router.add_post("/", rpc)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_avalon_listener_serves_direct_but_not_proxy() -> None:
    """An Avalon-only listener answers direct-model jobs; configuring it for the proxy model is refused."""
    async with avalon_listener() as url:
        with pytest.raises(ConfigurationError, match="not a tcbridge listener"):
            async with open_remote_pool(url, proxy=True, proxy_token="t"):
                pass

        case = vectors.load_case("av02-echo-short")
        sent = SentWorkOrder.from_request(
            case.request, bytes.fromhex(case.secrets["sessionKeyHex"])
        )
        async with open_remote_pool(url, proxy_token="t") as remote:
            assert not remote.is_tcbridge
            result = await remote.submit(_job(sent, "avalon:direct", target=False))
            with pytest.raises(
                ConfigurationError, match="cannot sign on-chain results"
            ):
                await remote.submit(_job(sent, "avalon:proxy", target=True))

    assert result.status == 0
    verdict = verify_response(sent, result.response, vectors_details())
    assert verdict.accepted, verdict.reason


@asynccontextmanager
async def answering(body: bytes) -> AsyncIterator[str]:
    """A local server that answers every POST with ``body``."""

    async def reply(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", reply)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[" * 50_000, "nested too deeply"),
        (b"[1, 2]", "non-object"),
    ],
    ids=["html", "deep", "array"],
)
async def test_hostile_answers_are_refused(body: bytes, match: str) -> None:
    """A remote listener answering garbage gives a PoolError that says so, not a crash."""
    async with answering(body) as url:
        with pytest.raises(PoolError, match=match):
            async with open_remote_pool(url):
                pass


async def test_unreachable_listener_is_retried_then_refused() -> None:
    """A listener nobody answers at is tried three times, then reported as a PoolError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PoolError, match="failed 3 times"):
        async with open_remote_pool(f"http://127.0.0.1:{port}/"):
            pass
