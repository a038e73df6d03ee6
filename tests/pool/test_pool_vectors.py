"""Avalon's interoperability vectors, served through the pool's processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from enclave_bridge.identity import SealedIdentity
from enclave_bridge.pool import PoolJob, PoolResult, open_pool
from enclave_bridge.requester import SentWorkOrder, WorkerDetails, verify_response
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors
from tests.pool.conftest import PASSPHRASE

pytestmark = requires_vectors

CASES = vectors.case_ids()
STATELESS = [c for c in CASES if not vectors.load_case(c).tags["stateful"]]
STATEFUL = [c for c in CASES if vectors.load_case(c).tags["stateful"]]


def _job(case_id: str) -> PoolJob:
    case = vectors.load_case(case_id)
    return PoolJob(
        order_key=f"vector:{case_id}", request=json.dumps(case.request).encode()
    )


def _check(case_id: str, result: PoolResult, details: WorkerDetails) -> None:
    case = vectors.load_case(case_id)
    sent = SentWorkOrder.from_request(
        case.request, bytes.fromhex(case.secrets["sessionKeyHex"])
    )

    assert result.status == 0, result.response
    assert result.request_hash is not None
    assert result.request_hash.hex() == case.hashes["request"]["requestHash"]
    verdict = verify_response(sent, result.response, details)
    assert verdict.accepted, f"{case_id}: {verdict.reason}"
    assert [o.data for o in verdict.outputs] == [
        bytes.fromhex(o["hex"]) for o in case.expected["outputs"]
    ]


async def test_stateless_vectors_through_the_pool(
    tmp_path: Path, sealed_worker: SealedIdentity, vector_details: WorkerDetails
) -> None:
    """Every stateless Avalon request, run in parallel by two processes, answers as expected."""
    async with open_pool(
        [sealed_worker], PASSPHRASE, tmp_path / "state.db", processes=2
    ) as pool:
        results = await asyncio.gather(*(pool.submit(_job(c)) for c in STATELESS))

    assert len(results) == len(STATELESS) > 10
    for case_id, result in zip(STATELESS, results, strict=True):
        _check(case_id, result, vector_details)


@pytest.mark.parametrize("case_id", STATEFUL)
async def test_stateful_vector_on_a_fresh_state_store(
    case_id: str,
    tmp_path: Path,
    sealed_worker: SealedIdentity,
    vector_details: WorkerDetails,
) -> None:
    """A heart-disease case on a fresh state store answers as expected.json says."""
    async with open_pool(
        [sealed_worker], PASSPHRASE, tmp_path / "state.db", processes=1
    ) as pool:
        result = await pool.submit(_job(case_id))

    _check(case_id, result, vector_details)
