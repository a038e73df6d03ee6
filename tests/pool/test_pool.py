"""The enclave pool: parallel orders, crashes, execution cap, dedupe, statistics."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from enclave_bridge import pool as pool_module
from enclave_bridge.eea import EeaError
from enclave_bridge.errors import ConfigurationError, PoolError
from enclave_bridge.identity import SealedIdentity
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.pool import EnclavePool, PoolJob, open_pool
from enclave_bridge.processor import EthereumTarget
from enclave_bridge.requester import WorkerDetails, verify_response
from enclave_bridge.result_signature import (
    EthereumDomain,
    recover_eip712_signer,
)
from tests.pool.conftest import (
    PASSPHRASE,
    TEST_REGISTRY,
    OrderMaker,
    audit_lines,
    open_test_pool,
)

DOMAIN = EthereumDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")


async def test_many_orders_in_parallel(
    pool: EnclavePool, make_order: OrderMaker, vector_details: WorkerDetails
) -> None:
    """Forty orders submitted at once all verify, and both processes served some."""
    orders = [make_order("test-pid", f"order {n}") for n in range(40)]

    results = await asyncio.gather(*(pool.submit(job) for job, _ in orders))

    pids = set()
    for result, (_, sent) in zip(results, orders, strict=True):
        verdict = verify_response(sent, result.response, vector_details)
        assert verdict.accepted, verdict.reason
        pids.add(int(verdict.outputs[0].data))
        assert result.executed and result.pid in pool.pids()
    assert pids == set(pool.pids())


async def test_result_signature_for_an_ethereum_target(
    pool: EnclavePool, make_order: OrderMaker
) -> None:
    """With an Ethereum target the result carries an EIP-712 signature by the worker."""
    order_key, stored_hash = keccak(b"order"), keccak(b"request")
    target = EthereumTarget(DOMAIN, order_key, stored_hash)
    job, _ = make_order("echo-result", "hello", target=target)

    result = await pool.submit(job)

    assert result.status == 0 and result.result_signature is not None
    signer = recover_eip712_signer(
        result.result_signature,
        DOMAIN,
        order_key,
        stored_hash,
        keccak(result.response_bytes),
        result.status,
    )
    record = next(iter(pool.worker_records().values()))
    assert signer == record.signing_address


@pytest.mark.parametrize("how", ["exit", "sigkill", "segv"])
async def test_crash_is_replaced_and_retried_once(
    pool: EnclavePool, make_order: OrderMaker, tmp_path: Path, how: str
) -> None:
    """A process that dies mid-order is replaced and the order retried to success."""
    marker = tmp_path / f"crashed-{how}"
    job, _ = make_order("test-crash", json.dumps({"how": how, "marker": str(marker)}))
    before = set(pool.pids())

    result = await pool.submit(job)

    assert result.status == 0
    assert marker.exists()
    stats = pool.stats()
    assert stats.crashes == 1 and stats.replacements == 1
    assert len(pool.pids()) == 2 and set(pool.pids()) != before
    starts = [
        line for line in audit_lines(tmp_path / "audit.log") if line["event"] == "start"
    ]
    assert len(starts) == 2


async def test_second_crash_answers_an_error_result(
    pool: EnclavePool, make_order: OrderMaker
) -> None:
    """An order that crashes its process twice is answered with a signed error result."""
    target = EthereumTarget(DOMAIN, keccak(b"k"), keccak(b"r"))
    job, _ = make_order(
        "test-crash", json.dumps({"how": "exit", "marker": None}), target=target
    )

    result = await pool.submit(job)

    assert result.status == EeaError.UNKNOWN_ERROR
    assert result.pool_failure == "crashed"
    assert "crashed 2 times" in result.response["error"]["message"]
    assert result.result_signature is not None
    assert pool.stats().crashes == 2
    again = await pool.submit(job)
    assert again.response_bytes == result.response_bytes


async def test_execution_cap_kills_and_answers(
    pool: EnclavePool, make_order: OrderMaker
) -> None:
    """An order past its cap is stopped, answered with an error, and the pool goes on."""
    slow, _ = make_order("test-sleep", "30", max_seconds=0.5)
    loop = asyncio.get_running_loop()
    began = loop.time()

    result = await pool.submit(slow)

    assert loop.time() - began < 5
    assert result.status == EeaError.UNKNOWN_ERROR
    assert result.pool_failure == "timeout"
    assert "0.5 s cap" in result.response["error"]["message"]
    stats = pool.stats()
    assert stats.timeouts == 1 and stats.replacements == 1 and stats.crashes == 0
    quick, _ = make_order("echo-result", "still alive")
    assert (await pool.submit(quick)).status == 0


async def test_copied_request_is_deduplicated(
    pool: EnclavePool, make_order: OrderMaker, tmp_path: Path
) -> None:
    """The same request under a second order key gets a duplicate error, a retry does not."""
    job, _ = make_order("echo-result", "once only")
    copy = PoolJob(order_key="copied", request=job.request)

    first = await pool.submit(job)
    retry = await pool.submit(job)
    copied = await pool.submit(copy)

    assert first.status == 0 and first.executed
    assert retry.response_bytes == first.response_bytes and not retry.executed
    assert copied.status == EeaError.INVALID_PARAMETER
    assert "duplicate request" in copied.response["error"]["message"]
    commits = [
        line
        for line in audit_lines(tmp_path / "audit.log")
        if line["event"] == "commit"
    ]
    assert [line["orderKey"] for line in commits] == [job.order_key]


async def test_stats_snapshot(pool: EnclavePool, make_order: OrderMaker) -> None:
    """Statistics count queued, in-flight, done and failed orders and the oldest wait."""
    capacity = pool.size * pool.depth
    slow = [make_order("test-sleep", "0.3")[0] for _ in range(capacity + 2)]
    tasks = [asyncio.ensure_future(pool.submit(job)) for job in slow]
    await asyncio.sleep(0.15)

    busy = pool.stats()
    assert busy.processes == 2
    assert busy.in_flight == capacity and busy.queued == 2
    assert busy.oldest_queued_age > 0.1
    await asyncio.gather(*tasks)
    bad = PoolJob(order_key="garbage", request=b"{not json")
    assert (await pool.submit(bad)).status != 0

    idle = pool.stats()
    done = len(slow) + 1
    assert (idle.queued, idle.in_flight, idle.done, idle.failed) == (0, 0, done, 1)
    assert idle.oldest_queued_age == 0.0


async def test_worker_records_are_public_only(
    pool: EnclavePool, vector_keys: WorkerKeys
) -> None:
    """The parent learns public details and the signing address, never a private key."""
    records = pool.worker_records()
    record = records[vector_keys.worker_id]

    assert record.signing_address == vector_keys.signing_address
    assert record.details["workerTypeData"]["proofDataType"] == "simulated"
    assert vector_keys.signing_key.hex() not in repr(records)


async def test_wrong_passphrase_fails_start(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> None:
    """A pool whose processes cannot unseal the keys refuses to start, leaving no process."""
    pool = EnclavePool([sealed_worker], "wrong", tmp_path / "state.db", processes=2)

    with pytest.raises(ConfigurationError, match="wrong passphrase"):
        await pool.start()
    assert pool.pids() == []


async def test_closed_pool_refuses_work(
    tmp_path: Path, sealed_worker: SealedIdentity, make_order: OrderMaker
) -> None:
    """After close() every process is gone and submit raises PoolError."""
    async with open_pool(
        [sealed_worker],
        PASSPHRASE,
        tmp_path / "s.db",
        processes=2,
        registry=TEST_REGISTRY,
    ) as pool:
        pids = pool.pids()
    job, _ = make_order("echo-result", "late")

    with pytest.raises(PoolError):
        await pool.submit(job)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


PATIENT = "Data: 25 10 1 67 102 125 1 95 5 10 1 11 36 1"
AGGREGATE = "Heart disease aggregate data: "


async def test_stateful_orders_and_their_retries_count_once(
    pool: EnclavePool, make_order: OrderMaker, vector_details: WorkerDetails
) -> None:
    """Eight heart-disease orders, each submitted twice at once, are counted eight times."""
    evaluations = [make_order("heart-disease-eval", PATIENT)[0] for _ in range(8)]

    results = await asyncio.gather(
        *(pool.submit(job) for job in evaluations for _ in range(2))
    )
    query, sent = make_order("heart-disease-eval", AGGREGATE)
    answer = await pool.submit(query)

    assert all(result.status == 0 for result in results)
    assert sum(result.executed for result in results) == 8
    verdict = verify_response(sent, answer.response, vector_details)
    assert verdict.accepted, verdict.reason
    assert verdict.outputs[0].data == b"Heart disease risk is 47% for 8 people"


async def test_parent_checkpoints_the_state_wal(
    tmp_path: Path, sealed_worker: SealedIdentity, make_order: OrderMaker
) -> None:
    """Committed results reach the database file without a pool process checkpointing.

    The processes' own checkpoint mark is far above what a few orders write,
    so only the parent's periodic checkpoint can have moved the pages.
    """
    path = tmp_path / "state.db"
    async with open_pool(
        [sealed_worker],
        PASSPHRASE,
        path,
        processes=1,
        registry=TEST_REGISTRY,
        checkpoint_interval=0.05,
    ) as running:
        before = path.stat().st_size
        for n in range(10):
            job, _ = make_order("echo-result", f"order {n}")
            assert (await running.submit(job)).status == 0
        for _ in range(200):
            if path.stat().st_size > before:
                break
            await asyncio.sleep(0.05)

        assert path.stat().st_size > before


async def test_an_unexpected_checkpoint_error_is_logged_and_close_still_stops_all(
    tmp_path: Path,
    sealed_worker: SealedIdentity,
    make_order: OrderMaker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The checkpointer survives an error it did not expect; close() stops every process."""
    calls = []

    def broken_checkpoint(path: Path) -> None:
        calls.append(path)
        raise RuntimeError("checkpoint exploded")

    monkeypatch.setattr(pool_module, "checkpoint_wal", broken_checkpoint)
    running = EnclavePool(
        [sealed_worker],
        PASSPHRASE,
        tmp_path / "state.db",
        processes=1,
        registry=TEST_REGISTRY,
        checkpoint_interval=0.02,
    )
    await running.start()
    pids = running.pids()
    for _ in range(200):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.02)
    job, _ = make_order("echo-result", "still served")
    assert (await running.submit(job)).status == 0

    await running.close()

    assert len(calls) >= 3
    assert "checkpoint failed unexpectedly" in caplog.text
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_busy_wal_is_checkpointed_sooner(
    tmp_path: Path,
    sealed_worker: SealedIdentity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a checkpoint that found a large WAL, the next one comes a tenth of the interval later."""
    found: list[int] = []

    def checkpoint(path: Path) -> tuple[int, int, int]:
        pages = 10 if len(found) >= 3 else pool_module.CHECKPOINT_BUSY_PAGES
        found.append(pages)
        return 0, pages, pages

    monkeypatch.setattr(pool_module, "checkpoint_wal", checkpoint)
    async with open_pool(
        [sealed_worker],
        PASSPHRASE,
        tmp_path / "state.db",
        processes=1,
        registry=TEST_REGISTRY,
        checkpoint_interval=1.0,
    ):
        await asyncio.sleep(1.7)

    # 1.0 s, then 0.1 s after each of the three busy ones: four by 1.3 s,
    # and no fifth before 2.3 s (the fourth found a small WAL).
    assert found == [pool_module.CHECKPOINT_BUSY_PAGES] * 3 + [10]


@pytest.fixture
async def one_process_pool(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> AsyncIterator[EnclavePool]:
    """One pool process, so orders submitted together share its group commit."""
    async with open_test_pool(tmp_path, sealed_worker, processes=1) as running:
        yield running


async def test_a_hang_behind_held_results_is_blamed_on_itself(
    one_process_pool: EnclavePool, make_order: OrderMaker
) -> None:
    """Results held for a group commit do not take the blame for the order after them."""
    pool = one_process_pool
    quick = [make_order("echo-result", f"quick {n}")[0] for n in range(3)]
    hang, _ = make_order("test-sleep", "30", max_seconds=0.5)
    after, _ = make_order("echo-result", "after")

    results = await asyncio.gather(*(pool.submit(job) for job in [*quick, hang, after]))

    *first, hung, last = results
    assert [r.status for r in first] == [0, 0, 0]
    assert all(r.pool_failure is None for r in first)
    assert hung.pool_failure == "timeout" and hung.status == EeaError.UNKNOWN_ERROR
    assert last.status == 0 and last.pool_failure is None
    assert pool.stats().timeouts == 1


@pytest.mark.parametrize("how", ["exit", "sigkill"])
async def test_a_crash_behind_held_results_is_blamed_on_itself(
    one_process_pool: EnclavePool, make_order: OrderMaker, how: str
) -> None:
    """A crash after results were held counts against the crashing order only."""
    pool = one_process_pool
    crash_order = json.dumps({"how": how, "marker": None})
    # Twice the held orders before the crash: each would use up its retries
    # if a crash were blamed on the first outstanding order.
    quick = [make_order("echo-result", f"quick {n}")[0] for n in range(2)]
    crasher, _ = make_order("test-crash", crash_order)

    results = await asyncio.gather(*(pool.submit(job) for job in [*quick, crasher]))

    assert [r.status for r in results[:2]] == [0, 0]
    assert all(r.pool_failure is None for r in results[:2])
    assert results[2].pool_failure == "crashed"
    assert pool.stats().crashes == 2


async def test_held_results_are_committed_before_they_are_sent(
    one_process_pool: EnclavePool, make_order: OrderMaker, tmp_path: Path
) -> None:
    """Every answer that left the process is committed: a retry gets the same bytes."""
    pool = one_process_pool
    jobs = [make_order("echo-result", f"order {n}")[0] for n in range(12)]

    first = await asyncio.gather(*(pool.submit(job) for job in jobs))
    again = await asyncio.gather(*(pool.submit(job) for job in jobs))

    assert all(r.status == 0 and r.executed for r in first)
    assert [r.response_bytes for r in again] == [r.response_bytes for r in first]
    assert not any(r.executed for r in again)
    commits = [
        line["orderKey"]
        for line in audit_lines(tmp_path / "audit.log")
        if line["event"] == "commit"
    ]
    assert sorted(commits) == sorted(job.order_key for job in jobs)


async def test_batch_scheduling_for_the_pool_and_back(
    tmp_path: Path, sealed_worker: SealedIdentity
) -> None:
    """The loop thread and the processes run SCHED_BATCH while the pool is open."""
    before = os.sched_getscheduler(0)
    assert before == os.SCHED_OTHER
    async with open_pool(
        [sealed_worker], PASSPHRASE, tmp_path / "state.db", processes=1
    ) as pool:
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
        assert os.sched_getscheduler(pool.pids()[0]) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == before

    async with open_pool(
        [sealed_worker],
        PASSPHRASE,
        tmp_path / "other.db",
        processes=1,
        batch_scheduling=False,
    ) as pool:
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        assert os.sched_getscheduler(pool.pids()[0]) == os.SCHED_OTHER
