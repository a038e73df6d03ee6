"""Set-based store paths: per-item outcomes, chain order, and statements per batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from connector.store import (
    Fees,
    OrderRef,
    ResultToSave,
    Settlement,
    State,
    WorkOrderStore,
)
from enclave_bridge.errors import InvalidTransition

from .conftest import FakeClock
from .factories import CHAIN, REGISTRY, key, order, ref

OTHER_REGISTRY = "0x" + "77" * 20
RELAYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def result(n: int, response: bytes = b"out") -> ResultToSave:
    return ResultToSave(ref(n), 0, response, b"\x1b" * 65, b"\x11" * 32)


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


@contextmanager
def counted_statements(store: WorkOrderStore) -> Iterator[list[str]]:
    """Every SQL statement the store sends while the block runs."""
    sent: list[str] = []

    def on_execute(*args: Any) -> None:
        sent.append(args[2])

    engine = store._engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


async def test_save_results_gives_each_item_its_own_outcome(
    store: WorkOrderStore,
) -> None:
    """A batch saves what it may, refuses a lost claim alone, and keeps first results."""
    await record(store, 1, 2, 3)
    await store.claim_next(2, "pool-a")
    await store.claim_next(1, "pool-b")
    await store.save_results([result(2)], claimer="pool-a")

    outcomes = await store.save_results(
        [result(1, b"first"), result(2), result(3), result(1, b"second")],
        claimer="pool-a",
    )

    assert outcomes[0] is State.RESULT_READY
    assert outcomes[1] is State.RESULT_READY
    assert isinstance(outcomes[2], InvalidTransition)
    assert "claimed by 'pool-b'" in str(outcomes[2])
    assert outcomes[3] is State.RESULT_READY
    one, three = await store.get_order(ref(1)), await store.get_order(ref(3))
    assert one is not None and one.result is not None
    assert one.result.response == b"first"
    assert three is not None and three.state is State.CLAIMED and three.result is None


async def test_save_results_refuses_an_order_that_never_ran(
    store: WorkOrderStore,
) -> None:
    """RECEIVED -> RESULT_READY is not in the table: that item alone is refused."""
    await record(store, 1, 2)
    await store.claim_next(1, "pool-a")

    outcomes = await store.save_results([result(1), result(2)])

    assert outcomes[0] is State.RESULT_READY
    assert isinstance(outcomes[1], InvalidTransition)
    assert await state_of(store, 2) is State.RECEIVED
    untouched = await store.get_order(ref(2))
    assert untouched is not None and untouched.result is None


async def test_settlements_in_one_batch_are_judged_in_chain_order(
    store: WorkOrderStore,
) -> None:
    """Completions, failures, cancels and skips of one batch land as a sequence would."""
    await record(store, 1, 2, 3, 4)
    batch = [
        Settlement(key(1), "completed", 30),
        Settlement(key(2), "completed", 31, status=5),
        Settlement(key(3), "cancelled", 31),
        Settlement(key(4), "skipped", 32, reason=2),
        Settlement(key(1), "completed", 33),  # a repeat: nothing more
        Settlement(key(2), "cancelled", 33),  # FAILED is final: left alone
        Settlement(key(99), "completed", 33),  # never recorded here
    ]

    outcome = await store.record_events(
        CHAIN, REGISTRY, [], checkpoint_block=33, settlements=batch
    )

    assert outcome.settled == 4
    one, two, four = [await store.get_order(ref(n)) for n in (1, 2, 4)]
    assert one is not None and one.state is State.COMPLETED
    assert one.completion_block == 30
    assert two is not None and two.state is State.FAILED
    assert (two.completion_block, two.error_code) == (31, 5)
    assert await state_of(store, 3) is State.CANCELLED
    assert four is not None and four.state is State.RECEIVED
    assert four.error_message == "completion skipped on-chain in block 32, reason 2"


async def test_recording_refuses_a_batch_with_an_order_not_ready(
    store: WorkOrderStore,
) -> None:
    """One order that may not become SUBMITTED rolls back the transaction and nonce."""
    await record(store, 1, 2)
    await store.claim_next(2, "pool-a")
    await store.save_results([result(1)])

    with pytest.raises(InvalidTransition):
        async with store.reserve_nonce(CHAIN, RELAYER, node_nonce=7) as slot:
            await slot.record(b"raw", b"\x01" * 32, [ref(1), ref(2)], submit=True)

    assert await state_of(store, 1) is State.RESULT_READY
    assert await store.get_transaction(CHAIN, RELAYER, 7) is None
    assert await store.allocate_nonce(CHAIN, RELAYER, node_nonce=7) == 7


async def test_ready_completions_lists_one_registry_oldest_first(
    store: WorkOrderStore, clock: FakeClock
) -> None:
    """The submitter's poll: results of one registry's RESULT_READY orders, in order."""
    await record(store, 1, 2, 3)
    await store.record_events(CHAIN, OTHER_REGISTRY, [order(4)], checkpoint_block=10)
    await store.claim_next(4, "pool-a")
    for n in (2, 1, 3):
        clock.advance(1)
        await store.save_results([result(n, b"out %d" % n)])
    elsewhere = OrderRef.of(CHAIN, OTHER_REGISTRY, key(4))
    await store.save_results(
        [ResultToSave(elsewhere, 0, b"elsewhere", b"\x1b" * 65, b"\x11" * 32)]
    )

    ready = await store.ready_completions(2, CHAIN, REGISTRY)

    assert [item.ref for item in ready] == [ref(2), ref(1)]
    assert ready[0].response == b"out 2"
    assert ready[0].status == 0 and ready[0].signature == b"\x1b" * 65
    assert ready[0].requester_address == (order(2).requester_address or "").lower()
    assert ready[0].ready_since < ready[1].ready_since


async def test_batch_paths_send_a_fixed_number_of_statements(
    store: WorkOrderStore,
) -> None:
    """Claims, saves, links and settlements of 300 orders cost statements per batch."""
    numbers = list(range(1, 301))
    await record(store, *numbers)

    with counted_statements(store) as sent:
        claimed = await store.claim_next(300, "pool-a")
        await store.save_results([result(n) for n in numbers], claimer="pool-a")
        async with store.reserve_nonce(CHAIN, RELAYER) as slot:
            await slot.record(
                b"raw", b"\x02" * 32, [ref(n) for n in numbers], Fees(), submit=True
            )
        await store.record_events(
            CHAIN,
            REGISTRY,
            [],
            checkpoint_block=40,
            settlements=[Settlement(key(n), "completed", 40) for n in numbers],
        )

    assert len(claimed) == 300
    assert await state_of(store, 300) is State.COMPLETED
    work = [s for s in sent if not s.lstrip().upper().startswith(("BEGIN", "COMMIT"))]
    assert len(work) <= 20, work


async def test_each_state_change_logs_one_info_line_with_fields(
    store: WorkOrderStore, caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO line per moved order, its tx hash rendered as 0x hex."""
    await record(store, 1, 2)

    with caplog.at_level(logging.INFO, logger="connector.store.repository"):
        await store.claim_next(2, "pool-a")

    lines = [r for r in caplog.records if r.getMessage().endswith("-> CLAIMED")]
    assert len(lines) == 2
    assert {str(r.__dict__["tx_hash"]) for r in lines} == {
        order(n).tx_hash for n in (1, 2)
    }


async def test_a_result_for_an_order_settled_elsewhere_changes_nothing(
    store: WorkOrderStore,
) -> None:
    """An order completed on-chain before its result is saved keeps no result row."""
    await record(store, 1)
    await store.claim_next(1, "pool-a")
    await store.record_events(
        CHAIN,
        REGISTRY,
        [],
        checkpoint_block=30,
        settlements=[Settlement(key(1), "completed", 30)],
    )

    outcomes = await store.save_results([result(1)], claimer="pool-a")

    assert outcomes == [State.COMPLETED]
    done = await store.get_order(ref(1))
    assert done is not None and done.result is None
