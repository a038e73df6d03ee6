"""Fixtures for the pool tests: the vectors' worker sealed cheaply, order builders."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from enclave_bridge.identity import SealedIdentity, seal
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.pool import EnclavePool, PoolJob, open_pool
from enclave_bridge.requester import SentWorkOrder, WorkerDetails, build_work_order
from tests.enclave import vectors

PASSPHRASE = "pool tests only"
# scrypt at 2**10 keeps unsealing in the milliseconds; production uses 2**15.
TEST_SCRYPT_N = 2**10
TEST_REGISTRY = "tests.pool.pool_workloads:registry"


@pytest.fixture(scope="session")
def vector_keys() -> WorkerKeys:
    if not vectors.available():
        pytest.skip("Avalon vectors not available")
    return vectors.worker_keys()


@pytest.fixture(scope="session")
def sealed_worker(vector_keys: WorkerKeys) -> SealedIdentity:
    return seal(vector_keys, PASSPHRASE, scrypt_n=TEST_SCRYPT_N)


@pytest.fixture(scope="session")
def vector_details() -> WorkerDetails:
    return WorkerDetails.from_json(vectors.worker())


def order_bytes(sent: SentWorkOrder) -> bytes:
    return json.dumps(sent.request, separators=(",", ":")).encode()


OrderMaker = Callable[..., tuple[PoolJob, SentWorkOrder]]


@pytest.fixture
def make_order(vector_details: WorkerDetails) -> OrderMaker:
    """Builds a tcbridge-style order for the vectors' worker and wraps it in a job."""
    counter = iter(range(1_000_000))

    def make(
        workload: str, data: bytes | str, *, order_key: str | None = None, **job: Any
    ) -> tuple[PoolJob, SentWorkOrder]:
        sent = build_work_order(vector_details, workload, [data])
        key = order_key or f"test:{next(counter)}"
        return PoolJob(order_key=key, request=order_bytes(sent), **job), sent

    return make


@pytest.fixture
async def pool(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> AsyncIterator[EnclavePool]:
    """Two pool processes with the test workloads and an audit log."""
    async with open_test_pool(tmp_path, sealed_worker, processes=2) as running:
        yield running


def open_test_pool(
    tmp_path: Path, sealed_worker: SealedIdentity, *, processes: int
) -> contextlib.AbstractAsyncContextManager[EnclavePool]:
    """A pool of the test workloads, its state and audit log in ``tmp_path``."""
    return open_pool(
        [sealed_worker],
        PASSPHRASE,
        tmp_path / "state.db",
        processes=processes,
        registry=TEST_REGISTRY,
        audit_log=tmp_path / "audit.log",
        default_max_seconds=10.0,
    )


def audit_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
