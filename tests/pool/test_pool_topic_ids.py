"""The pool with the registry's ids (expected_ids) and with orders it must refuse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak

from enclave_bridge.eea import EeaError
from enclave_bridge.errors import BugError
from enclave_bridge.identity import SealedIdentity, generate_identity, seal
from enclave_bridge.pool import EnclavePool, PoolJob, PoolResult, open_pool
from enclave_bridge.processor import EthereumTarget
from enclave_bridge.requester import SentWorkOrder
from enclave_bridge.result_signature import EthereumDomain, recover_eip712_signer
from enclave_bridge.workload_state import SqliteWorkloadStateStore
from tests.pool.conftest import (
    PASSPHRASE,
    TEST_REGISTRY,
    TEST_SCRYPT_N,
    OrderMaker,
    audit_lines,
)

DOMAIN = EthereumDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")


def target_for(name: str) -> EthereumTarget:
    return EthereumTarget(DOMAIN, keccak(name.encode()), keccak(b"stored request"))


def ids_of(sent: SentWorkOrder) -> dict[str, str]:
    params = sent.params
    return {
        "workOrderId": params["workOrderId"].lower(),
        "workerId": params["workerId"].lower(),
        "requesterId": params["requesterId"].lower(),
    }


def signer_of(result: PoolResult, target: EthereumTarget) -> str | None:
    assert result.result_signature is not None
    return recover_eip712_signer(
        result.result_signature,
        DOMAIN,
        target.order_key,
        target.request_hash,
        keccak(result.response_bytes),
        result.status,
    )


def address_of(pool: EnclavePool, worker_id: str) -> str:
    return pool.worker_records()[worker_id].signing_address


def started(tmp_path: Path) -> list[str]:
    return [
        line["orderKey"]
        for line in audit_lines(tmp_path / "audit.log")
        if line["event"] == "start"
    ]


async def test_differing_ids_are_answered_not_run(
    pool: EnclavePool, make_order: OrderMaker, tmp_path: Path
) -> None:
    """A request whose requesterId differs from the topic's is refused, signed, never run."""
    target = target_for("mismatch")
    job, sent = make_order("echo-result", "hostile", target=target)
    expected = {**ids_of(sent), "requesterId": "ab" * 32}
    job = PoolJob(job.order_key, job.request, target, expected_ids=expected)

    result = await pool.submit(job)

    assert result.status == EeaError.INVALID_PARAMETER and not result.executed
    message = result.response["error"]["message"]
    assert message.startswith("requesterId:") and "ab" * 32 in message
    assert signer_of(result, target) == address_of(pool, expected["workerId"])
    assert started(tmp_path) == []
    store = SqliteWorkloadStateStore(pool.state_path, create=False)
    try:
        stored = store.result(job.order_key)
        assert stored is not None and stored.status == EeaError.INVALID_PARAMETER
        assert store.claimed_by(expected["workerId"], sent.request_hash) is None
    finally:
        store.close()


async def test_matching_ids_run(
    pool: EnclavePool, make_order: OrderMaker, tmp_path: Path
) -> None:
    """Ids equal to the topic's (any case) travel to the process and the order runs."""
    target = target_for("match")
    job, sent = make_order("echo-result", "fine", target=target)
    expected = {name: value.upper() for name, value in ids_of(sent).items()}
    job = PoolJob(job.order_key, job.request, target, expected_ids=expected)

    result = await pool.submit(job)

    assert result.status == 0 and result.executed
    assert signer_of(result, target) == address_of(pool, ids_of(sent)["workerId"])
    assert started(tmp_path) == [job.order_key]


async def test_refused_job_is_signed_committed_and_never_run(
    pool: EnclavePool, make_order: OrderMaker, tmp_path: Path
) -> None:
    """PoolJob.refuse answers with its code and message; a later run keeps that answer."""
    target = target_for("refused")
    job, sent = make_order("echo-result", "over the limit", target=target)
    refused = PoolJob(
        job.order_key,
        job.request,
        target,
        expected_ids=ids_of(sent),
        refuse=(int(EeaError.ACCESS_DENIED), "requester is over its hourly limit"),
    )

    result = await pool.submit(refused)
    again = await pool.submit(job)

    assert result.status == EeaError.ACCESS_DENIED and not result.executed
    assert result.pool_failure is None and result.request_hash is None
    error = result.response["error"]
    assert error["message"] == "requester is over its hourly limit"
    assert error["data"]["workOrderId"] == sent.params["workOrderId"]
    assert signer_of(result, target) == address_of(pool, ids_of(sent)["workerId"])
    assert again.response_bytes == result.response_bytes and not again.executed
    assert started(tmp_path) == []


@pytest.mark.parametrize(
    "options",
    [
        {"expected_ids": {"workOrderId": "01", "workerId": "02"}},
        {"expected_ids": {"workOrderId": "01", "workerId": "0x2", "requesterId": "3"}},
        {"refuse": (0, "zero is success, not a refusal")},
        {"refuse": (2, b"not a str")},
    ],
    ids=["ids-missing", "ids-0x", "refuse-zero", "refuse-bytes"],
)
def test_malformed_jobs_are_refused_at_construction(options: dict[str, Any]) -> None:
    """A job a pool process could not serve is a BugError in the caller's process."""
    with pytest.raises(BugError):
        PoolJob("bad", b"{}", **options)


@pytest.fixture
async def two_worker_pool(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> AsyncIterator[EnclavePool]:
    """One pool process holding the vectors' worker and a second identity."""
    other = seal(
        generate_identity("topic-ids other"), PASSPHRASE, scrypt_n=TEST_SCRYPT_N
    )
    async with open_pool(
        [sealed_worker, other],
        PASSPHRASE,
        tmp_path / "state.db",
        processes=1,
        registry=TEST_REGISTRY,
        audit_log=tmp_path / "audit.log",
    ) as running:
        yield running


async def test_registry_worker_signs_when_json_names_another_identity(
    two_worker_pool: EnclavePool, make_order: OrderMaker, tmp_path: Path
) -> None:
    """With two identities, the topic's worker signs the refusal, not the JSON's."""
    target = target_for("other identity")
    job, sent = make_order("echo-result", "misrouted", target=target)
    named = ids_of(sent)["workerId"]
    other = next(w for w in two_worker_pool.worker_records() if w != named)
    expected = {**ids_of(sent), "workerId": other}
    unparseable = PoolJob("garbage", b"{not json", target, expected_ids=expected)

    result = await two_worker_pool.submit(
        PoolJob(job.order_key, job.request, target, expected_ids=expected)
    )
    garbage = await two_worker_pool.submit(unparseable)

    assert result.status == EeaError.INVALID_PARAMETER and not result.executed
    assert signer_of(result, target) == address_of(two_worker_pool, other)
    assert signer_of(result, target) != address_of(two_worker_pool, named)
    assert garbage.status == EeaError.INVALID_PARAMETER
    assert garbage.response["error"]["data"]["workOrderId"] == expected["workOrderId"]
    assert signer_of(garbage, target) == address_of(two_worker_pool, other)
    assert started(tmp_path) == []


async def test_refusal_ignores_a_zero_execution_cap(
    pool: EnclavePool, make_order: OrderMaker
) -> None:
    """A refused job with a 0 s cap is answered; no process is killed for it."""
    target = target_for("zero cap")
    job, sent = make_order("echo-result", "never runs", target=target)
    refused = PoolJob(
        job.order_key,
        job.request,
        target,
        max_seconds=0.0,
        expected_ids=ids_of(sent),
        refuse=(int(EeaError.UNKNOWN_ERROR), "claimed too often; not run again"),
    )

    result = await pool.submit(refused)

    assert result.status == EeaError.UNKNOWN_ERROR and result.pool_failure is None
    assert signer_of(result, target) == address_of(pool, ids_of(sent)["workerId"])
    stats = pool.stats()
    assert stats.timeouts == 0 and stats.replacements == 0
