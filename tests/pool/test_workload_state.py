"""Workload state store: one atomic commit, retries never count twice, claims."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from enclave_bridge.errors import StoreError
from enclave_bridge.workload import WorkloadContext, WorkloadInput
from enclave_bridge.workload_state import (
    CommitOutcome,
    Execution,
    MemoryWorkloadStateStore,
    SqliteWorkloadStateStore,
    StateSnapshot,
    StoredResult,
    WorkloadStateStore,
    checkpoint_wal,
    execute_once,
)
from enclave_bridge.workloads.heart import HeartDiseaseEval

WORKER = "ab" * 32
HEART = "heart-disease-eval"
PATIENT = b"Data: 25 10 1 67 102 125 1 95 5 10 1 11 36 1"


@pytest.fixture(params=["memory", "sqlite"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[WorkloadStateStore]:
    """Every test runs against both implementations (one contract)."""
    made: WorkloadStateStore = (
        MemoryWorkloadStateStore()
        if request.param == "memory"
        else SqliteWorkloadStateStore(tmp_path / "state.db")
    )
    yield made
    made.close()


def _result(order_key: str, request_hash: bytes | None = b"h" * 32) -> StoredResult:
    return StoredResult(order_key, WORKER, 0, b'{"result":1}', request_hash, b"s" * 65)


def heart_executor(
    request_hash: bytes, data: bytes = PATIENT
) -> Callable[[StateSnapshot | None, Callable[[bytes], bool]], Execution]:
    """Runs the real heart-disease workload the way a pool process does."""

    def execute(
        snapshot: StateSnapshot | None, claim: Callable[[bytes], bool]
    ) -> Execution:
        if not claim(request_hash):
            return Execution(2, b"duplicate", request_hash, None, None)
        state = snapshot.state if snapshot is not None else None
        ctx = WorkloadContext(WORKER, "wo", "rq", state=state)
        out = HeartDiseaseEval().run([WorkloadInput(0, data)], ctx)
        return Execution(0, out.outputs[0].data, request_hash, None, out.new_state)

    return execute


def test_load_before_any_commit(store: WorkloadStateStore) -> None:
    """State that was never committed loads as version 0 and None."""
    assert store.load(WORKER, HEART) == StateSnapshot(0, None)


def test_commit_stores_result_state_and_claim_together(
    store: WorkloadStateStore,
) -> None:
    """One commit makes the result, the new state and the claim visible at once."""
    outcome = store.commit(
        _result("o1"),
        claim=True,
        workload=HEART,
        expected_version=0,
        new_state={"n": 1},
    )

    assert outcome is CommitOutcome.COMMITTED
    assert store.result("o1") == _result("o1")
    assert store.load(WORKER, HEART) == StateSnapshot(1, {"n": 1})
    assert store.claimed_by(WORKER, b"h" * 32) == "o1"


def test_stale_version_conflicts_and_changes_nothing(store: WorkloadStateStore) -> None:
    """A commit from an outdated version is refused and leaves no result or claim."""
    store.commit(
        _result("o1", b"1" * 32), claim=True, workload=HEART, new_state={"n": 1}
    )

    outcome = store.commit(
        _result("o2", b"2" * 32),
        claim=True,
        workload=HEART,
        expected_version=0,
        new_state={"n": 1},
    )

    assert outcome is CommitOutcome.CONFLICT
    assert store.result("o2") is None
    assert store.claimed_by(WORKER, b"2" * 32) is None
    assert store.load(WORKER, HEART).version == 1


def test_second_commit_of_an_order_is_already_committed(
    store: WorkloadStateStore,
) -> None:
    """Committing the same order key twice keeps the first result and state."""
    store.commit(_result("o1"), claim=True, workload=HEART, new_state={"n": 1})

    again = store.commit(
        _result("o1"),
        claim=True,
        workload=HEART,
        expected_version=1,
        new_state={"n": 2},
    )

    assert again is CommitOutcome.ALREADY_COMMITTED
    assert store.load(WORKER, HEART) == StateSnapshot(1, {"n": 1})


def test_claim_first_order_and_its_retry_only(store: WorkloadStateStore) -> None:
    """A request hash is claimed by its first order, again by a retry, never by another order."""
    digest = b"r" * 32

    assert store.claim(WORKER, digest, "order-a")
    assert store.claim(WORKER, digest, "order-a")
    assert not store.claim(WORKER, digest, "order-b")
    assert store.claim("cd" * 32, digest, "order-b")


def test_commit_with_a_claim_held_by_another_order_is_duplicate(
    store: WorkloadStateStore,
) -> None:
    """A result whose request hash another order holds is refused as DUPLICATE."""
    store.claim(WORKER, b"h" * 32, "first")

    assert store.commit(_result("second"), claim=True) is CommitOutcome.DUPLICATE
    assert store.result("second") is None


def test_execute_once_retry_returns_the_committed_result(
    store: WorkloadStateStore,
) -> None:
    """Retrying an order returns its committed result without running it again."""
    first = execute_once(
        store,
        worker_id=WORKER,
        order_key="o1",
        workload=HEART,
        stateful=True,
        execute=heart_executor(b"1" * 32),
    )
    retry = execute_once(
        store,
        worker_id=WORKER,
        order_key="o1",
        workload=HEART,
        stateful=True,
        execute=heart_executor(b"1" * 32),
    )

    assert first.executed and not retry.executed
    assert retry.result == first.result
    assert store.load(WORKER, HEART).state == {"totalRisk": 47, "count": 1}


def test_execute_once_copied_request_is_answered_duplicate(
    store: WorkloadStateStore,
) -> None:
    """A second order carrying an already served request hash gets an error and no state."""
    execute_once(
        store,
        worker_id=WORKER,
        order_key="o1",
        workload=HEART,
        stateful=True,
        execute=heart_executor(b"1" * 32),
    )
    copy = execute_once(
        store,
        worker_id=WORKER,
        order_key="o2",
        workload=HEART,
        stateful=True,
        execute=heart_executor(b"1" * 32),
    )

    assert copy.result.status == 2 and not copy.executed
    assert store.load(WORKER, HEART).state == {"totalRisk": 47, "count": 1}


def test_execute_once_reruns_on_conflict(store: WorkloadStateStore) -> None:
    """When a writer that ignores the state lock commits between load and commit, the order re-runs."""
    sneaked = False
    inner = heart_executor(b"1" * 32)

    def execute(
        snapshot: StateSnapshot | None, claim: Callable[[bytes], bool]
    ) -> Execution:
        nonlocal sneaked
        if not sneaked:
            sneaked = True
            current = store.load(WORKER, HEART)
            other = heart_executor(b"2" * 32)(current, lambda _: True)
            assert other.new_state is not None
            store.commit(
                StoredResult("other", WORKER, 0, other.response, b"2" * 32),
                claim=True,
                workload=HEART,
                expected_version=current.version,
                new_state=other.new_state,
            )
        return inner(snapshot, claim)

    outcome = execute_once(
        store,
        worker_id=WORKER,
        order_key="o1",
        workload=HEART,
        stateful=True,
        execute=execute,
    )

    assert outcome.reruns == 1
    assert store.load(WORKER, HEART).state == {"totalRisk": 94, "count": 2}


def _race(path: str, order_keys: list[str]) -> None:
    store = SqliteWorkloadStateStore(path, create=False)
    for key in order_keys:
        execute_once(
            store,
            worker_id=WORKER,
            order_key=key,
            workload=HEART,
            stateful=True,
            execute=heart_executor(key.encode().rjust(32, b"-")),
        )
    store.close()


def test_two_processes_racing_count_each_order_once(tmp_path: Path) -> None:
    """Two processes serving the same 40 heart-disease orders count each exactly once."""
    path = tmp_path / "state.db"
    SqliteWorkloadStateStore(path).close()
    keys = [f"order-{n}" for n in range(40)]
    context = multiprocessing.get_context("spawn")
    racers = [
        context.Process(target=_race, args=(str(path), keys)),
        context.Process(target=_race, args=(str(path), list(reversed(keys)))),
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0

    store = SqliteWorkloadStateStore(path)
    assert store.load(WORKER, HEART).state == {"totalRisk": 47 * 40, "count": 40}
    assert all(store.result(key) is not None for key in keys)
    store.close()


def test_writers_queue_on_the_writer_flock(tmp_path: Path) -> None:
    """A commit waits while another holder has the flock, and goes on once it is let go."""
    path = tmp_path / "state.db"
    store = SqliteWorkloadStateStore(path)
    holder = os.open(f"{path}.writer", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    outcome: list[CommitOutcome] = []
    writer = threading.Thread(
        target=lambda: outcome.append(store.commit(_result("queued"), claim=True))
    )
    writer.start()
    writer.join(0.3)
    still_waiting = writer.is_alive() and store.result("queued") is None

    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    writer.join(10)

    assert still_waiting
    assert outcome == [CommitOutcome.COMMITTED]
    assert store.result("queued") is not None
    store.close()


def test_checkpoint_moves_the_wal_into_the_database_file(tmp_path: Path) -> None:
    """checkpoint_wal copies committed pages while the store stays open for writes."""
    path = tmp_path / "state.db"
    store = SqliteWorkloadStateStore(path)
    before = path.stat().st_size
    for n in range(50):
        store.commit(_result(f"order-{n}", bytes([n]) * 32), claim=True)
    assert path.stat().st_size == before  # a WAL this small is not checkpointed

    busy, pages, copied = checkpoint_wal(path)

    assert (busy, copied) == (0, pages) and pages > 0
    assert path.stat().st_size > before
    store.commit(_result("after"), claim=True)
    assert store.result("after") is not None
    store.close()


def _write_until_stopped(path: str, stop: str) -> None:
    store = SqliteWorkloadStateStore(path, create=False)
    n = 0
    while not os.path.exists(stop):
        n += 1
        result = StoredResult(
            f"order-{n}", WORKER, 0, b"r" * 2048, n.to_bytes(32, "big"), b"s" * 65
        )
        store.commit(result, claim=True)
    store.close()


def test_checkpoints_restart_the_wal_under_continuous_writes(tmp_path: Path) -> None:
    """A writer that never pauses still lets each checkpoint restart the WAL.

    A checkpoint alone never catches up with a busy writer, so the WAL
    only grew (to the fallback mark, some 200 MB); now the end of each
    checkpoint holds the writers' flock, and the next commit starts the
    WAL from its beginning.
    """
    path = tmp_path / "state.db"
    stop = tmp_path / "stop"
    SqliteWorkloadStateStore(path).close()
    writer = multiprocessing.get_context("spawn").Process(
        target=_write_until_stopped, args=(str(path), str(stop))
    )
    writer.start()
    try:
        wal_pages = []
        while len(wal_pages) < 12:
            time.sleep(0.05)
            busy, pages, _ = checkpoint_wal(path)
            if not busy and pages > 0:
                wal_pages.append(pages)
    finally:
        stop.touch()
        writer.join(30)
    assert writer.exitcode == 0

    # Each commit appends at least two pages (its result's and its claim's)
    # to the WAL: a WAL that never restarted would hold them all.
    with sqlite3.connect(path) as db:
        (commits,) = db.execute("SELECT count(*) FROM work_order_result").fetchone()
    assert commits > 1000
    assert max(wal_pages) < commits, (commits, wal_pages)


def test_a_checkpoint_that_cannot_lock_writers_raises_store_error(
    tmp_path: Path,
) -> None:
    """The pool's checkpointer logs StoreError and goes on; other errors would end it."""
    path = tmp_path / "state.db"
    SqliteWorkloadStateStore(path).close()
    (tmp_path / "state.db.writer").unlink()
    (tmp_path / "state.db.writer").mkdir()

    with pytest.raises(StoreError, match="checkpoint the workload-state database"):
        checkpoint_wal(path)


def test_a_checkpoint_of_a_deleted_database_fails_and_creates_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    SqliteWorkloadStateStore(path).close()
    path.unlink()

    with pytest.raises(StoreError, match="checkpoint the workload-state database"):
        checkpoint_wal(path)

    assert not path.exists()


def test_state_lock_holds_back_another_process(tmp_path: Path) -> None:
    """While one process holds a state's lock, another's order on that state waits."""
    path = tmp_path / "state.db"
    store = SqliteWorkloadStateStore(path)
    other = multiprocessing.get_context("spawn").Process(
        target=_race, args=(str(path), ["waiting"])
    )
    with store.state_lock(WORKER, HEART):
        other.start()
        other.join(2)
        held_back = other.is_alive() and store.result("waiting") is None
    other.join(60)

    assert held_back
    assert other.exitcode == 0
    assert store.load(WORKER, HEART).state == {"totalRisk": 47, "count": 1}
    store.close()


def test_commit_many_judges_each_result_as_commit_would(
    store: WorkloadStateStore,
) -> None:
    """A group commit writes what commit() would and nothing for a refused item."""
    assert store.commit(_result("taken", b"t" * 32), claim=True) is (
        CommitOutcome.COMMITTED
    )
    assert store.commit(_result("done", b"d" * 32), claim=True) is (
        CommitOutcome.COMMITTED
    )
    first_done = store.result("done")

    outcomes = store.commit_many(
        [
            (_result("new", b"n" * 32), True),
            (_result("copy", b"t" * 32), True),  # hash claimed by "taken"
            (_result("done", b"x" * 32), True),  # order answered already
            (_result("refusal", None), False),
        ]
    )

    assert outcomes == [
        CommitOutcome.COMMITTED,
        CommitOutcome.DUPLICATE,
        CommitOutcome.ALREADY_COMMITTED,
        CommitOutcome.COMMITTED,
    ]
    assert store.claimed_by(WORKER, b"n" * 32) == "new"
    assert store.result("copy") is None
    assert store.result("done") == first_done
    # The refused retry of "done" claimed nothing.
    assert store.claimed_by(WORKER, b"x" * 32) is None
    assert store.result("refusal") == _result("refusal", None)


def test_lookup_reads_result_and_claim_together(store: WorkloadStateStore) -> None:
    """lookup() answers what result() and claimed_by() answer."""
    assert store.lookup("o1", WORKER, b"h" * 32) == (None, None)
    store.commit(_result("o1"), claim=True)

    assert store.lookup("o1", WORKER, b"h" * 32) == (_result("o1"), "o1")
    assert store.lookup("o2", WORKER, b"h" * 32) == (None, "o1")
    assert store.lookup("o1", WORKER, b"z" * 32) == (_result("o1"), None)


def test_lookup_many_answers_as_lookup_does(store: WorkloadStateStore) -> None:
    """Several lookups in one read give what each lookup gives alone."""
    store.commit(_result("o1"), claim=True)
    keys = [
        ("o1", WORKER, b"h" * 32),
        ("o2", WORKER, b"h" * 32),
        ("o3", WORKER, b"z" * 32),
    ]

    assert store.lookup_many(keys) == [store.lookup(*key) for key in keys]
    assert store.lookup_many(keys)[0] == (_result("o1"), "o1")
    assert store.lookup_many([]) == []
