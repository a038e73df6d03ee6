"""Conformance suite of WorkOrderStore, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from connector.store import (
    Fees,
    OrderRef,
    Settlement,
    State,
    StoredTransaction,
    StoredWorker,
    WorkOrderStore,
    open_store,
    repository,
)
from enclave_bridge.errors import BugError, InvalidTransition, StoreError

from .conftest import FakeClock
from .factories import CHAIN, REGISTRY, bad_log, block_hash, order, ref

RELAYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


async def record(store: WorkOrderStore, *numbers: int, block: int = 10) -> None:
    await store.record_events(
        CHAIN,
        REGISTRY,
        [order(n, block=block) for n in numbers],
        checkpoint_block=block,
    )


async def state_of(store: WorkOrderStore, n: int) -> State:
    found = await store.get_order(ref(n))
    assert found is not None
    return found.state


async def save(store: WorkOrderStore, n: int, response: bytes = b"out") -> State:
    return await store.save_result(
        ref(n),
        status=0,
        response=response,
        signature=b"\x1b" * 65,
        request_hash=b"\x11" * 32,
    )


async def bring_to(store: WorkOrderStore, n: int, state: State) -> OrderRef:
    """Drive order ``n`` (the only open one) to ``state`` through the API."""
    if state is State.SKIPPED:
        await store.record_events(
            CHAIN, REGISTRY, [order(n, skipped=True)], checkpoint_block=10
        )
        return ref(n)
    await record(store, n)
    steps: dict[State, list[Callable[[], Awaitable[object]]]] = {
        State.RECEIVED: [],
        State.CLAIMED: [lambda: store.claim_next(1, "pool-a")],
        State.RESULT_READY: [
            lambda: store.claim_next(1, "pool-a"),
            lambda: save(store, n),
        ],
        State.SUBMITTED: [
            lambda: store.claim_next(1, "pool-a"),
            lambda: save(store, n),
            lambda: store.mark_submitted([ref(n)]),
        ],
    }
    steps[State.COMPLETED] = [
        *steps[State.SUBMITTED],
        lambda: store.mark_completed(ref(n), block_number=20),
    ]
    steps[State.FAILED] = [
        *steps[State.SUBMITTED],
        lambda: store.mark_failed(ref(n), block_number=20, error_code=5),
    ]
    steps[State.ORPHANED] = [lambda: store.orphan_from_block(CHAIN, REGISTRY, 10)]
    steps[State.CANCELLED] = [lambda: store.cancel(ref(n))]
    for step in steps[state]:
        await step()
    assert await state_of(store, n) is state
    return ref(n)


# -- events and checkpoints ------------------------------------------------------


async def test_same_event_twice_is_recorded_once(store: WorkOrderStore) -> None:
    """Recording one event twice (a watcher restart) stores one order, unchanged."""
    first = await store.record_events(CHAIN, REGISTRY, [order(1)], checkpoint_block=10)
    again = await store.record_events(
        CHAIN, REGISTRY.lower(), [order(1), order(1)], checkpoint_block=10
    )

    assert first.new == [ref(1)]
    assert again.new == [] and again.duplicates == 2
    counts = await store.counts_by_state()
    assert counts[State.RECEIVED] == 1 and sum(counts.values()) == 1


async def test_events_and_checkpoint_land_together_or_not_at_all(
    store: WorkOrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the orders and checkpoint are written leaves neither stored."""
    await record(store, 1, block=10)
    original = repository.WorkOrderStore._write_checkpoint

    async def write_then_crash(*args: object, **kwargs: object) -> None:
        await original(*args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("process killed mid-batch")

    monkeypatch.setattr(
        repository.WorkOrderStore, "_write_checkpoint", write_then_crash
    )
    with pytest.raises(RuntimeError, match="killed"):
        await store.record_events(
            CHAIN,
            REGISTRY,
            [order(2, block=11)],
            [bad_log(1, block=11)],
            checkpoint_block=11,
        )
    monkeypatch.undo()

    assert await store.get_order(ref(2)) is None
    point = await store.get_checkpoint(CHAIN, REGISTRY)
    assert point is not None and point.block_number == 10
    assert sum((await store.counts_by_state()).values()) == 1


async def test_checkpoint_remembers_recent_hashes_only(store: WorkOrderStore) -> None:
    """The checkpoint keeps hashes of the last blocks and forgets older or newer ones."""
    keep = repository.RECENT_BLOCKS_KEPT
    head = keep + 50
    await store.record_events(
        CHAIN,
        REGISTRY,
        [],
        checkpoint_block=40,
        recent_hashes={n: block_hash(n) for n in range(1, 41)},
    )
    await store.record_events(
        CHAIN,
        REGISTRY,
        [],
        checkpoint_block=head,
        recent_hashes={head: block_hash(head), head + 1: block_hash(head + 1)},
        last_tx_id="fabric-tx-9",
    )

    point = await store.get_checkpoint(str(CHAIN), REGISTRY.upper().replace("0X", "0x"))
    assert point is not None
    assert point.block_number == head and point.last_tx_id == "fabric-tx-9"
    assert sorted(point.recent_hashes) == [
        n for n in range(1, 41) if n > head - keep
    ] + [head]
    assert point.recent_hashes[head] == block_hash(head)
    assert await store.get_checkpoint(CHAIN, REGISTRY, "other-stream") is None


async def test_malformed_logs_and_skipped_orders_are_kept_but_never_claimed(
    store: WorkOrderStore,
) -> None:
    """Skipped orders and malformed logs are recorded once and never reach the pool."""
    outcome = await store.record_events(
        CHAIN,
        REGISTRY,
        [order(1, skipped=True)],
        [bad_log(1), bad_log(1)],
        checkpoint_block=10,
    )

    assert outcome.malformed == 2
    assert await state_of(store, 1) is State.SKIPPED
    assert await store.claim_next(5, "pool-a") == []


# -- the state table through the API -------------------------------------------

ALLOWED = [
    (State.RECEIVED, "claim", State.CLAIMED),
    (State.CLAIMED, "save", State.RESULT_READY),
    (State.CLAIMED, "release", State.RECEIVED),
    (State.RESULT_READY, "submit", State.SUBMITTED),
    (State.SUBMITTED, "complete", State.COMPLETED),
    (State.SUBMITTED, "fail", State.FAILED),
    (State.SUBMITTED, "requeue", State.RESULT_READY),
    (State.RECEIVED, "orphan", State.ORPHANED),
    (State.CLAIMED, "orphan", State.ORPHANED),
    (State.RESULT_READY, "orphan", State.ORPHANED),
    (State.SUBMITTED, "orphan", State.ORPHANED),
    (State.ORPHANED, "reappear", State.RECEIVED),
    (State.RECEIVED, "cancel", State.CANCELLED),
    (State.CLAIMED, "cancel", State.CANCELLED),
    (State.RESULT_READY, "cancel", State.CANCELLED),
    (State.SUBMITTED, "cancel", State.CANCELLED),
    (State.ORPHANED, "cancel", State.CANCELLED),
]
FORBIDDEN = [
    (State.RECEIVED, "save"),
    (State.RECEIVED, "submit"),
    (State.FAILED, "complete"),
    (State.CLAIMED, "submit"),
    (State.CANCELLED, "fail"),
    (State.SKIPPED, "complete"),
    (State.CLAIMED, "requeue"),
    (State.ORPHANED, "submit"),
    (State.COMPLETED, "fail"),
    (State.COMPLETED, "cancel"),
    (State.COMPLETED, "requeue"),
    (State.FAILED, "submit"),
    (State.CANCELLED, "save"),
    (State.SKIPPED, "cancel"),
    (State.SKIPPED, "save"),
]


def action(store: WorkOrderStore, name: str, n: int) -> Callable[[], Awaitable[object]]:
    actions: dict[str, Callable[[], Awaitable[object]]] = {
        "claim": lambda: store.claim_next(1, "pool-b"),
        "save": lambda: save(store, n),
        "release": lambda: store.release_claims("pool-a"),
        "submit": lambda: store.mark_submitted([ref(n)]),
        "complete": lambda: store.mark_completed(ref(n), block_number=30),
        "fail": lambda: store.mark_failed(ref(n), block_number=30, error_code=5),
        "requeue": lambda: store.requeue_submission([ref(n)]),
        "orphan": lambda: store.orphan_from_block(CHAIN, REGISTRY, 10),
        "reappear": lambda: record(store, n, block=12),
        "cancel": lambda: store.cancel(ref(n)),
    }
    return actions[name]


@pytest.mark.parametrize(
    ("source", "name", "target"), ALLOWED, ids=[f"{s}-{a}" for s, a, _ in ALLOWED]
)
async def test_every_allowed_transition_moves_the_order(
    store: WorkOrderStore, source: State, name: str, target: State
) -> None:
    """Each transition of the design table is reachable through its API call."""
    await bring_to(store, 1, source)

    await action(store, name, 1)()

    assert await state_of(store, 1) is target


@pytest.mark.parametrize(
    ("source", "name"), FORBIDDEN, ids=[f"{s}-{a}" for s, a in FORBIDDEN]
)
async def test_forbidden_transitions_raise_and_change_nothing(
    store: WorkOrderStore, source: State, name: str
) -> None:
    """A transition outside the table raises InvalidTransition and leaves the order."""
    await bring_to(store, 1, source)
    before = await store.get_order(ref(1))

    with pytest.raises(InvalidTransition):
        await action(store, name, 1)()

    assert await store.get_order(ref(1)) == before


async def test_repeated_steps_are_idempotent(store: WorkOrderStore) -> None:
    """Saving, submitting and completing twice gives the same end state as once."""
    await bring_to(store, 1, State.RESULT_READY)

    assert await save(store, 1, response=b"second") is State.RESULT_READY
    await store.mark_submitted([ref(1)])
    await store.mark_submitted([ref(1)])
    await store.mark_completed(ref(1), block_number=40)
    await store.mark_completed(ref(1), block_number=40)

    done = await store.get_order(ref(1))
    assert done is not None and done.state is State.COMPLETED
    assert done.completion_block == 40
    assert done.result is not None and done.result.response == b"out"


async def test_a_dead_claim_is_retried_once(store: WorkOrderStore) -> None:
    """CLAIMED -> RECEIVED works after the first claim; the second death is final."""
    await record(store, 1)
    await store.claim_next(1, "pool-a")
    first = await store.release_claims("pool-a")
    [again] = await store.claim_next(1, "pool-b")
    second = await store.release_claims("pool-b")

    assert first.requeued == [ref(1)] and first.exhausted == []
    assert again.attempts == 2
    assert second.requeued == [] and second.exhausted == [ref(1)]
    assert await state_of(store, 1) is State.CLAIMED
    # The pool then signs an error result, which ends the retries.
    assert await save(store, 1) is State.RESULT_READY


async def test_save_result_checks_the_claimer(store: WorkOrderStore) -> None:
    """A process whose claim was released and taken by another cannot save."""
    await record(store, 1)
    await store.claim_next(1, "pool-a")
    await store.release_claims("pool-a")
    await store.claim_next(1, "pool-b")

    with pytest.raises(InvalidTransition, match="claimed by 'pool-b'"):
        await store.save_result(
            ref(1),
            status=0,
            response=b"",
            signature=b"",
            request_hash=b"",
            claimer="pool-a",
        )


async def test_callback_gas_is_kept_with_the_order(store: WorkOrderStore) -> None:
    """The callback gas from the submit event comes back with the order for the submitter."""
    await store.record_events(
        CHAIN, REGISTRY, [order(1, callback_gas=1_500_000)], checkpoint_block=10
    )

    stored = await store.get_order(ref(1))

    assert stored is not None and stored.callback_gas == 1_500_000


async def test_unknown_order_is_a_store_error(store: WorkOrderStore) -> None:
    """Moving an order the store never saw says so instead of passing silently."""
    with pytest.raises(StoreError, match="record its event first"):
        await store.mark_submitted([ref(99)])


async def test_settlements_close_orders_with_the_checkpoint(
    store: WorkOrderStore,
) -> None:
    """Confirmed completions and cancellations close orders in the watcher's batch."""
    await record(store, 1, 2, 3, 4)
    await store.claim_next(3, "pool-a")
    for n in (1, 2, 4):
        if await state_of(store, n) is State.RECEIVED:
            await store.claim_next(1, "pool-a")
        await save(store, n)
    await store.mark_submitted([ref(1), ref(2), ref(4)])
    batch = [
        Settlement(ref(1).order_key, "completed", 20),
        Settlement(ref(2).order_key, "completed", 20, status=5),
        Settlement(ref(3).order_key, "cancelled", 21),
        Settlement(ref(4).order_key, "skipped", 21, reason=4),
        Settlement(b"\x77" * 32, "completed", 21),
    ]

    first = await store.record_events(
        CHAIN, REGISTRY, [], checkpoint_block=21, settlements=batch
    )
    again = await store.record_events(
        CHAIN, REGISTRY, [], checkpoint_block=21, settlements=batch[:3]
    )

    assert (first.settled, again.settled) == (4, 0)
    done, failed, cancelled, skipped = [
        await store.get_order(ref(n)) for n in range(1, 5)
    ]
    assert done is not None and done.state is State.COMPLETED
    assert done.completion_block == 20
    assert failed is not None and failed.state is State.FAILED
    assert failed.error_code == 5
    assert cancelled is not None and cancelled.state is State.CANCELLED
    assert skipped is not None and skipped.state is State.SUBMITTED
    assert skipped.error_message is not None and "reason 4" in skipped.error_message


async def test_completion_confirmed_on_chain_closes_an_order_in_any_open_state(
    store: WorkOrderStore,
) -> None:
    """A completion sent by an earlier run or another relayer closes a RECEIVED order."""
    await record(store, 1)

    outcome = await store.record_events(
        CHAIN,
        REGISTRY,
        [],
        checkpoint_block=30,
        settlements=[Settlement(ref(1).order_key, "completed", 30)],
    )

    assert outcome.settled == 1
    assert await state_of(store, 1) is State.COMPLETED


async def test_settlement_the_table_forbids_is_left_alone(
    store: WorkOrderStore,
) -> None:
    """A completion seen for a cancelled order neither moves it nor stalls the checkpoint."""
    await record(store, 1)
    await store.cancel(ref(1))

    outcome = await store.record_events(
        CHAIN,
        REGISTRY,
        [],
        checkpoint_block=30,
        settlements=[Settlement(ref(1).order_key, "completed", 30)],
    )

    assert outcome.settled == 0
    assert await state_of(store, 1) is State.CANCELLED
    point = await store.get_checkpoint(CHAIN, REGISTRY)
    assert point is not None and point.block_number == 30


# -- concurrency ----------------------------------------------------------------


async def test_concurrent_claimers_never_get_the_same_order(
    store: WorkOrderStore, store_url: str, clock: FakeClock
) -> None:
    """Two processes claiming at once (two engines) get disjoint sets of orders."""
    total = 60
    await store.record_events(
        CHAIN, REGISTRY, [order(n) for n in range(total)], checkpoint_block=10
    )

    async def drain(other: WorkOrderStore, claimer: str) -> list[bytes]:
        taken: list[bytes] = []
        while batch := await other.claim_next(3, claimer):
            taken.extend(o.ref.order_key for o in batch)
            await asyncio.sleep(0)
        return taken

    async with (
        open_store(url := store_url, clock=clock) as one,
        open_store(url, clock=clock) as two,
    ):
        results = await asyncio.gather(
            drain(one, "a1"), drain(one, "a2"), drain(two, "b1"), drain(two, "b2")
        )

    claimed = [k for taken in results for k in taken]
    assert len(claimed) == total and len(set(claimed)) == total
    assert (await store.counts_by_state())[State.CLAIMED] == total


@pytest.mark.postgres
async def test_postgres_claim_skips_rows_another_claimer_has_locked(
    pg_cluster: object, clock: FakeClock
) -> None:
    """On PostgreSQL a claim passes over rows locked by another transaction."""
    from sqlalchemy import text

    from connector.devdb import PostgresCluster

    assert isinstance(pg_cluster, PostgresCluster)
    url = pg_cluster.create_database("skip_locked")
    async with open_store(url, clock=clock) as store:
        await record(store, 1, 2, 3)
        async with store._engine.connect() as blocker:
            await blocker.execute(
                text(
                    "SELECT id FROM work_orders ORDER BY updated_at, id "
                    "LIMIT 1 FOR UPDATE"
                )
            )
            taken = await asyncio.wait_for(store.claim_next(3, "pool-a"), timeout=5)
            await blocker.rollback()

    assert len(taken) == 2


async def test_concurrent_nonce_allocation_is_distinct_and_consecutive(
    store: WorkOrderStore, store_url: str, clock: FakeClock
) -> None:
    """Twenty allocations from two processes at once give 20 distinct nonces in a row."""
    async with open_store(store_url, clock=clock) as other:
        nonces = await asyncio.gather(
            *(
                s.allocate_nonce(CHAIN, RELAYER, node_nonce=7)
                for s in [store, other] * 10
            )
        )

    assert sorted(nonces) == list(range(7, 27))
    assert await store.allocate_nonce(CHAIN, RELAYER, node_nonce=100) == 100
    assert await store.allocate_nonce(CHAIN, RELAYER.lower()) == 101


async def test_raw_transaction_is_committed_before_broadcast(
    store: WorkOrderStore, store_url: str, clock: FakeClock
) -> None:
    """The signed tx is visible to another process before the caller broadcasts it."""
    await bring_to(store, 1, State.RESULT_READY)
    broadcast_saw: list[StoredTransaction | None] = []

    async with open_store(store_url, clock=clock) as watcher:

        async def broadcast(nonce: int) -> None:
            broadcast_saw.append(await watcher.get_transaction(CHAIN, RELAYER, nonce))

        async with store.reserve_nonce(CHAIN, RELAYER, node_nonce=3) as slot:
            await slot.record(
                b"\x02raw-1", b"\xaa" * 32, [ref(1)], Fees(21000, 2 * 10**30, 10**9)
            )
        await broadcast(slot.nonce)

    [seen] = broadcast_saw
    assert seen is not None
    assert seen.nonce == 3 and seen.raw == b"\x02raw-1" and seen.orders == [ref(1)]
    assert seen.fees.max_fee_per_gas == 2 * 10**30
    await store.record_fee_bump(
        CHAIN, RELAYER, 3, b"\x02raw-2", b"\xbb" * 32, Fees(max_fee_per_gas=3 * 10**30)
    )
    [pending] = await store.pending_transactions(CHAIN)
    assert pending.raw == b"\x02raw-2"
    assert pending.all_hashes == [b"\xaa" * 32, b"\xbb" * 32]
    await store.set_transaction_state(
        CHAIN, RELAYER, 3, "mined", mined_hash=b"\xbb" * 32
    )
    assert await store.pending_transactions(CHAIN) == []


async def test_recording_with_submit_marks_orders_submitted_atomically(
    store: WorkOrderStore,
) -> None:
    """With submit=True the orders become SUBMITTED only if the tx is committed."""
    await bring_to(store, 1, State.RESULT_READY)

    with pytest.raises(RuntimeError, match="crash"):
        async with store.reserve_nonce(CHAIN, RELAYER) as slot:
            await slot.record(b"raw", b"\xdd" * 32, [ref(1)], submit=True)
            raise RuntimeError("crash before commit")
    assert await state_of(store, 1) is State.RESULT_READY

    async with store.reserve_nonce(CHAIN, RELAYER) as slot:
        await slot.record(b"raw", b"\xdd" * 32, [ref(1)], submit=True)
    assert await state_of(store, 1) is State.SUBMITTED
    assert slot.nonce == 0


async def test_failed_signing_rolls_back_the_nonce(store: WorkOrderStore) -> None:
    """If signing fails inside the reservation, the nonce is handed out again."""
    with pytest.raises(ValueError, match="signer"):
        async with store.reserve_nonce(CHAIN, RELAYER, node_nonce=5):
            raise ValueError("signer unavailable")
    with pytest.raises(BugError, match="no transaction was recorded"):
        async with store.reserve_nonce(CHAIN, RELAYER, node_nonce=5):
            pass

    async with store.reserve_nonce(CHAIN, RELAYER, node_nonce=5) as slot:
        await slot.record(b"raw", b"\xcc" * 32, [])
    assert slot.nonce == 5
    assert await store.get_transaction(CHAIN, RELAYER, 5) is not None


# -- reorgs -----------------------------------------------------------------------


async def test_orphan_rollback_and_reappearance_keeps_the_result(
    store: WorkOrderStore,
) -> None:
    """A reorg orphans open orders from its block up; seen again, one keeps its result."""
    await store.record_events(
        CHAIN,
        REGISTRY,
        [order(1, block=9), order(2, block=10), order(3, block=11)],
        checkpoint_block=11,
        recent_hashes={n: block_hash(n) for n in (9, 10, 11)},
    )
    [first, second, third] = await store.claim_next(3, "pool-a")
    assert [o.ref for o in (first, second, third)] == [ref(1), ref(2), ref(3)]
    await save(store, 2, response=b"made before the reorg")

    orphaned = await store.orphan_from_block(CHAIN, REGISTRY, 10)

    assert sorted(o.order_key for o in orphaned) == sorted(
        [ref(2).order_key, ref(3).order_key]
    )
    assert await state_of(store, 1) is State.CLAIMED
    point = await store.get_checkpoint(CHAIN, REGISTRY)
    assert point is not None and point.block_number == 9
    assert list(point.recent_hashes) == [9]

    # The same order 2 lands again in block 12 of the new branch.
    outcome = await store.record_events(
        CHAIN, REGISTRY, [order(2, block=12)], checkpoint_block=12
    )
    again = await store.get_order(ref(2))
    assert outcome.revived == [ref(2)] and outcome.new == []
    assert again is not None
    assert again.state is State.RECEIVED and again.block_number == 12
    assert (
        again.result is not None and again.result.response == b"made before the reorg"
    )
    [reclaimed] = await store.claim_next(5, "pool-b")
    assert reclaimed.ref == ref(2) and reclaimed.result is not None
    assert await save(store, 2, response=b"must not replace") is State.RESULT_READY
    kept = await store.get_order(ref(2))
    assert kept is not None and kept.result is not None
    assert kept.result.response == b"made before the reorg"


async def test_reappearance_with_another_request_drops_the_old_result(
    store: WorkOrderStore,
) -> None:
    """An orphaned key that returns with different request bytes loses its result."""
    await bring_to(store, 1, State.RESULT_READY)
    await store.orphan_from_block(CHAIN, REGISTRY, 10)

    await store.record_events(
        CHAIN, REGISTRY, [order(1, block=11, request=b"{}")], checkpoint_block=11
    )

    changed = await store.get_order(ref(1))
    assert changed is not None and changed.state is State.RECEIVED
    assert changed.request == b"{}" and changed.result is None


async def test_deep_reorg_reopens_completed_orders_by_what_it_removed(
    store: WorkOrderStore,
) -> None:
    """Completion removed: RESULT_READY with its result; submit removed: ORPHANED; older: untouched."""
    for n in (1, 2, 3):
        await bring_to(store, n, State.COMPLETED)  # submitted in block 10, completed in 20

    assert await store.orphan_from_block(CHAIN, REGISTRY, 21) == []
    assert await state_of(store, 1) is State.COMPLETED
    await store.orphan_from_block(CHAIN, REGISTRY, 15)
    again = await store.get_order(ref(1))
    assert again is not None and again.state is State.RESULT_READY
    assert again.result is not None and again.completion_block is None

    orphaned = await store.orphan_from_block(CHAIN, REGISTRY, 5)
    assert ref(2) in orphaned
    assert await state_of(store, 2) is State.ORPHANED


async def test_result_finished_while_orphaned_is_kept(store: WorkOrderStore) -> None:
    """A pool that finishes an order after its orphaning stores the result for later."""
    await bring_to(store, 1, State.CLAIMED)
    await store.orphan_from_block(CHAIN, REGISTRY, 10)

    assert await save(store, 1) is State.ORPHANED
    await record(store, 1, block=11)
    back = await store.get_order(ref(1))
    assert back is not None and back.state is State.RECEIVED and back.result is not None


# -- statistics and roles ----------------------------------------------------------


async def test_counts_by_state_and_oldest_age(
    store: WorkOrderStore, clock: FakeClock
) -> None:
    """Counts cover every state and the age is measured from entering the state."""
    await record(store, 1, 2, 3)
    clock.advance(30)
    await store.claim_next(1, "pool-a")
    clock.advance(12.5)

    counts = await store.counts_by_state()
    assert counts[State.RECEIVED] == 2 and counts[State.CLAIMED] == 1
    assert set(counts) == set(State) and counts[State.COMPLETED] == 0
    assert await store.oldest_age(State.RECEIVED) == pytest.approx(42.5)
    assert await store.oldest_age(State.CLAIMED) == pytest.approx(12.5)
    assert await store.oldest_age(State.SUBMITTED) is None


async def test_role_lock_admits_one_holder_per_chain(
    store: WorkOrderStore, store_url: str, clock: FakeClock
) -> None:
    """Only one process holds a chain's watcher role; it frees on exit."""
    async with open_store(store_url, clock=clock) as other:
        async with (
            store.role_lock(CHAIN, "watcher") as first,
            other.role_lock(CHAIN, "watcher") as second,
            other.role_lock(CHAIN, "submitter") as different,
        ):
            assert (first, second, different) == (True, False, True)
        async with other.role_lock(CHAIN, "watcher") as after:
            assert after is True


async def test_unreachable_database_is_a_store_error(tmp_path: object) -> None:
    """A database that cannot be reached surfaces as StoreError, chained."""
    from connector.devdb import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError, match="could not be reached") as caught:
        async with open_store(url):
            pass
    assert caught.value.__cause__ is not None


async def test_worker_identity_is_saved_and_replaced(store: WorkOrderStore) -> None:
    """A worker identity round-trips, and saving it again replaces it."""
    worker = StoredWorker(
        worker_id="ab" * 32,
        sealed_identity=b"sealed-v1",
        details={"workerType": 1, "proofDataType": "simulated"},
        signing_address="0xAbCdEf0000000000000000000000000000000001",
    )
    await store.save_worker(worker)
    rotated = StoredWorker(
        worker.worker_id, b"sealed-v2", {"workerType": 1}, worker.signing_address
    )
    await store.save_worker(rotated)

    found = await store.get_worker(worker.worker_id)
    assert found is not None and found.sealed_identity == b"sealed-v2"
    assert dict(found.details) == {"workerType": 1}
    assert found.signing_address == worker.signing_address.lower()
    assert await store.get_worker("missing") is None


async def test_stale_claims_are_released_by_age(
    store: WorkOrderStore, clock: FakeClock
) -> None:
    """Claims older than a cut-off (a host that vanished) go back to RECEIVED."""
    await record(store, 1, 2)
    await store.claim_next(1, "host-a")
    clock.advance(600)
    await store.claim_next(1, "host-b")

    released = await store.release_claims(claimed_before=clock.now)

    assert released.requeued == [ref(1)] and released.exhausted == []
    assert await state_of(store, 2) is State.CLAIMED
    with pytest.raises(BugError, match="needs a claimer"):
        await store.release_claims()
