"""Fixtures shared by the enclave-side tests: the vectors' worker and a processor."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from enclave_bridge.keys import WorkerKeys
from enclave_bridge.processor import ProcessorPolicy, WorkOrderProcessor
from enclave_bridge.requester import WorkerDetails
from enclave_bridge.workload import default_registry
from tests.enclave import vectors

requires_vectors = pytest.mark.skipif(
    not vectors.available(),
    reason=f"Avalon vectors not found under {vectors.vectors_dir()} (set TCBRIDGE_SHARED)",
)


@pytest.fixture(scope="session")
def worker_keys() -> WorkerKeys:
    if not vectors.available():
        pytest.skip("Avalon vectors not available")
    return vectors.worker_keys()


@pytest.fixture(scope="session")
def worker_details() -> WorkerDetails:
    if not vectors.available():
        pytest.skip("Avalon vectors not available")
    return WorkerDetails.from_json(vectors.worker())


@pytest.fixture
def make_processor(worker_keys: WorkerKeys) -> Callable[..., WorkOrderProcessor]:
    """A processor for the vectors' worker under a given policy."""

    def make(policy: ProcessorPolicy | None = None) -> WorkOrderProcessor:
        return WorkOrderProcessor(
            {worker_keys.worker_id: worker_keys},
            default_registry(),
            policy or ProcessorPolicy(),
        )

    return make


@pytest.fixture
def processor(make_processor: Callable[..., WorkOrderProcessor]) -> WorkOrderProcessor:
    return make_processor()
