"""One suite, two backends: the local EnclavePool and a RemotePool through a listener behave alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from eth_utils.crypto import keccak

from enclave_bridge.keys import WorkerKeys
from enclave_bridge.pool import PoolJob
from enclave_bridge.processor import EthereumTarget
from enclave_bridge.remote_pool import open_remote_pool
from enclave_bridge.requester import WorkerDetails, build_work_order, verify_response
from enclave_bridge.result_signature import EthereumDomain, recover_eip712_signer
from tests.enclave.conftest import requires_vectors
from tests.listener.conftest import PROXY_TOKEN, Harness

pytestmark = [requires_vectors, pytest.mark.asyncio(loop_scope="module")]

DOMAIN = EthereumDomain(1, "0x" + "ab" * 20)
BACKENDS = ["local", "remote"]


@asynccontextmanager
async def backend(kind: str, harness: Harness) -> AsyncIterator[Any]:
    """The harness's own pool, or a RemotePool in proxy mode through its listener."""
    if kind == "local":
        yield harness.pool
        return
    async with open_remote_pool(
        harness.url, proxy=True, proxy_token=PROXY_TOKEN
    ) as remote:
        yield remote


def _job(request: bytes, key: str) -> PoolJob:
    target = EthereumTarget(DOMAIN, keccak(key.encode()), keccak(request))
    return PoolJob(order_key=key, request=request, target=target, max_seconds=10)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_signed_result(
    kind: str,
    harness: Harness,
    vector_details: WorkerDetails,
    vector_keys: WorkerKeys,
) -> None:
    """A good order gets status 0, the EEA request hash, and a result signature by the worker."""
    sent = build_work_order(vector_details, "echo-result", [kind.encode()])
    job = _job(json.dumps(sent.request).encode(), f"conformance:{kind}:ok")
    async with backend(kind, harness) as pool:
        assert vector_details.worker_id in pool.worker_records()
        result = await pool.submit(job)

    assert result.status == 0
    assert result.request_hash == sent.request_hash
    assert result.result_signature is not None
    assert isinstance(job.target, EthereumTarget)
    signer = recover_eip712_signer(
        result.result_signature,
        DOMAIN,
        job.target.order_key,
        job.target.request_hash,
        keccak(result.response_bytes),
        0,
    )
    assert signer == vector_keys.signing_address
    assert verify_response(sent, result.response, vector_details).accepted


@pytest.mark.parametrize("kind", BACKENDS)
async def test_signed_error_result(
    kind: str, harness: Harness, vector_keys: WorkerKeys
) -> None:
    """A request that is not a work order still gets a signed EEA error result."""
    request = b'{"jsonrpc":"2.0","method":"WorkOrderSubmit","id":3,"params":{}}'
    job = _job(request, f"conformance:{kind}:bad")
    async with backend(kind, harness) as pool:
        result = await pool.submit(job)

    assert result.status == 2
    assert result.response["error"]["code"] == 2
    assert result.result_signature is not None
    assert isinstance(job.target, EthereumTarget)
    signer = recover_eip712_signer(
        result.result_signature,
        DOMAIN,
        job.target.order_key,
        job.target.request_hash,
        keccak(result.response_bytes),
        2,
    )
    assert signer == vector_keys.signing_address


@pytest.mark.parametrize("kind", BACKENDS)
async def test_retry_returns_the_committed_answer(
    kind: str, harness: Harness, vector_details: WorkerDetails
) -> None:
    """Submitting the same job again answers the same bytes without running it again."""
    sent = build_work_order(vector_details, "echo-result", [b"retry"])
    job = _job(json.dumps(sent.request).encode(), f"conformance:{kind}:retry")
    async with backend(kind, harness) as pool:
        first = await pool.submit(job)
        second = await pool.submit(job)

    assert first.status == second.status == 0
    assert second.response_bytes == first.response_bytes
    assert second.result_signature == first.result_signature
    assert not second.executed
