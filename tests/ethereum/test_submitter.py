"""The submitter against a scripted node: batching, settled orders, reverts, drops, fee bumps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from connector.ethereum.rpc import JsonRpcClient
from connector.ethereum.submitter import ReadyResult, Submitter
from connector.ethereum.transactions import (
    COMPLETE,
    COMPLETE_BATCH,
    ORDER_COMPLETED,
    TxSigner,
)
from tests.support.faketxnode import FakeTxNode, serve_txnode
from tests.support.memsubmit import MemorySubmitterStore

KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
REGISTRY = "0x" + "ab" * 20


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def ready(
    n: int, size: int = 100, requester: str = "0xreq", callback_gas: int = 0
) -> ReadyResult:
    return ReadyResult(
        bytes([n]) * 32, 0, b"r" * size, b"s" * 65, requester, 0.0, callback_gas
    )


@dataclass
class Harness:
    node: FakeTxNode
    store: MemorySubmitterStore
    submitter: Submitter
    clock: Clock


@asynccontextmanager
async def harness(**options: object) -> AsyncIterator[Harness]:
    node = FakeTxNode()
    clock = Clock()
    store = MemorySubmitterStore(now=clock)
    async with serve_txnode(node) as url, JsonRpcClient(url) as rpc:
        submitter = Submitter(
            rpc,
            TxSigner(KEY, 31337),
            REGISTRY,
            store,
            clock=clock,
            batch_wait_s=0.0,
            **options,
        )  # type: ignore[arg-type]
        yield Harness(node, store, submitter, clock)


async def test_ready_results_go_out_in_batches_sized_by_count_and_bytes() -> None:
    """Seven results with a cap of three per batch take three transactions; bytes cap too."""
    async with harness(max_items=3, max_bytes=10_000) as h:
        for n in range(7):
            h.store.ready[ready(n).order_key] = ready(n)

        sent = await h.submitter.step()

        assert sent == 7
        assert [tx.data[:4] for tx in h.node.sent] == [
            COMPLETE_BATCH,
            COMPLETE_BATCH,
            COMPLETE,
        ]
        assert [tx.nonce for tx in h.node.sent] == [0, 1, 2]

    async with harness(max_items=50, max_bytes=1_000) as h:
        for n in range(4):
            h.store.ready[ready(n, size=400).order_key] = ready(n, size=400)

        await h.submitter.step()

        assert len(h.node.sent) == 4  # each item alone fills the byte budget


async def test_raw_transaction_is_recorded_before_it_is_broadcast() -> None:
    """The store holds the signed bytes before the node ever sees them."""
    async with harness() as h:
        h.store.ready[ready(1).order_key] = ready(1)
        h.node.refuse_send = ["connection reset by peer (simulated)"]

        await h.submitter.step()

        assert h.store.events == ["recorded 0"]
        assert list(h.store.txs) == [0] and h.node.pool == {}


async def test_orders_completed_on_chain_are_not_paid_for_again() -> None:
    """workOrderGet is checked first: an order already completed is not sent."""
    async with harness() as h:
        h.store.ready[ready(1).order_key] = ready(1)
        h.store.ready[ready(2).order_key] = ready(2)
        h.node.order_state[ready(1).order_key] = ORDER_COMPLETED

        await h.submitter.step()

        assert len(h.node.sent) == 1
        assert ready(2).order_key in h.node.sent[0].data


async def test_estimation_revert_sends_nothing_and_allocates_no_nonce() -> None:
    """A completion that would revert is not sent and leaves no nonce gap."""
    async with harness() as h:
        h.store.ready[ready(1).order_key] = ready(1)
        h.node.revert_estimate = "BadSignature()"

        await h.submitter.step()

        assert h.node.sent == [] and h.store.next_nonce == 0
        assert "BadSignature" in h.submitter.stats.last_error


async def test_revert_on_chain_is_recorded_with_its_reason_and_released_once() -> None:
    """A mined revert marks the transaction, keeps the reason, and the orders go back to ready."""
    async with harness() as h:
        h.store.ready[ready(1).order_key] = ready(1)
        await h.submitter.step()
        h.node.revert_on_chain = "AlreadyCompleted()"
        h.node.mine()

        await h.submitter.track()

        assert h.store.mined[0][1] is False
        assert h.store.released == [
            (ready(1).order_key, "reverted: execution reverted: AlreadyCompleted()")
        ]


async def test_dropped_transaction_is_rebroadcast_with_the_same_bytes() -> None:
    """A transaction the node forgot is sent again from the stored raw bytes."""
    async with harness() as h:
        h.store.ready[ready(1).order_key] = ready(1)
        await h.submitter.step()
        first = h.node.sent[0]
        h.node.drop_all()

        await h.submitter.track()

        assert h.node.sent[-1].hash == first.hash
        assert h.submitter.stats.rebroadcast == 1


async def test_stuck_transaction_is_replaced_with_both_fees_bumped() -> None:
    """Below the base fee for too long, the same nonce is re-signed with fees raised by >= 10 %."""
    async with harness(stuck_after_s=30.0, bump_percent=13) as h:
        h.store.ready[ready(1).order_key] = ready(1)
        await h.submitter.step()
        first = h.node.sent[0]
        h.node.base_fee = first.max_fee + 1  # nothing mines now
        h.node.mine()
        h.clock.now += 31

        await h.submitter.track()

        bumped = h.node.sent[-1]
        assert bumped.nonce == first.nonce and bumped.hash != first.hash
        assert bumped.max_fee * 100 >= first.max_fee * 110
        assert bumped.tip * 100 >= first.tip * 110
        assert h.node.mine() == [bumped]


async def test_fee_bump_stops_at_the_cap() -> None:
    """The replacement's max fee never exceeds the configured cap."""
    async with harness(stuck_after_s=1.0, fee_cap_wei=3 * 10**9) as h:
        h.store.ready[ready(1).order_key] = ready(1)
        await h.submitter.step()
        h.node.base_fee = 10**10
        for _ in range(5):
            h.clock.now += 2
            await h.submitter.track()

        assert max(tx.max_fee for tx in h.node.sent) <= 3 * 10**9


async def test_nonce_too_low_means_mined_and_the_receipt_settles_it() -> None:
    """A rebroadcast answered "nonce too low" is not an error: the receipt marks it mined."""
    async with harness() as h:
        h.store.ready[ready(1).order_key] = ready(1)
        await h.submitter.step()
        h.node.mine()
        h.node.receipts.clear()  # the node has not indexed the receipt yet

        await h.submitter.track()
        assert h.store.mined == {}
        h.node.mine()
        h.node.receipts[h.node.sent[0].hash] = {
            "transactionHash": h.node.sent[0].hash,
            "status": "0x1",
            "gasUsed": "0x1",
            "blockNumber": "0x5",
        }
        await h.submitter.track()

        assert h.store.mined[0] == (h.node.sent[0].hash, True)


async def test_callback_allowance_is_added_to_the_gas_estimate() -> None:
    """A batch item with a callback gets its callback gas on top of the estimate."""
    async with harness() as h:
        h.store.ready[ready(1).order_key] = ready(1, callback_gas=1_000_000)
        h.store.ready[ready(2).order_key] = ready(2)

        await h.submitter.step()

        assert h.node.sent[0].gas >= 100_000 + 1_000_000 + 1_000_000 // 63 + 60_000


async def test_requester_over_its_gas_cap_waits() -> None:
    """Once a requester spent its hourly gas cap, its results wait; others go on."""
    async with harness(gas_cap_per_requester_hour=40_000) as h:
        h.store.ready[ready(1).order_key] = ready(1, requester="0xflood")
        await h.submitter.step()
        h.node.mine()
        await h.submitter.track()  # 50,000 gas charged to 0xflood
        h.store.ready[ready(2).order_key] = ready(2, requester="0xflood")
        h.store.ready[ready(3).order_key] = ready(3, requester="0xother")

        await h.submitter.step()

        assert ready(2).order_key in h.store.ready
        assert ready(3).order_key not in h.store.ready
        h.clock.now += 3601
        await h.submitter.step()
        assert ready(2).order_key not in h.store.ready


async def test_receipt_counts_only_once_confirmed_and_a_reorged_tx_is_resent() -> None:
    """An unconfirmed receipt keeps the tx tracked; if a reorg drops it, the stored bytes go out again."""
    height = {"confirmed": 0}
    async with harness(confirmed_height=lambda: height["confirmed"]) as h:
        h.store.ready[ready(1).order_key] = ready(1)
        await h.submitter.step()
        first = h.node.sent[0]
        h.node.mine()
        await h.submitter.track()
        assert h.store.mined == {}  # mined, not yet confirmed

        # A reorg drops the block and the transaction with it.
        h.node.receipts.clear()
        h.node.chain_nonce = 0
        await h.submitter.track()
        assert h.node.sent[-1].hash == first.hash
        h.node.mine()
        height["confirmed"] = h.node.block
        await h.submitter.track()

        assert h.store.mined[0] == (first.hash, True)


async def test_batches_use_a_computed_limit_checked_by_one_call_not_an_estimate() -> None:
    """A batch is checked with eth_call at a computed gas limit; only single completions are estimated."""
    async with harness() as h:
        for n in range(5):
            h.store.ready[ready(n).order_key] = ready(n)

        await h.submitter.step()

        assert h.node.estimates == 0 and h.node.calls == 1
        assert h.node.sent[0].gas >= 60_000 + 5 * (40_000 + 48 * ready(0).size)

        h.store.ready[ready(9).order_key] = ready(9)
        await h.submitter.step()
        assert h.node.estimates == 1


async def test_http_429_at_broadcast_leaves_no_nonce_gap() -> None:
    """A rate-limited broadcast keeps its stored nonce; the next order takes the next one, both go out."""
    async with harness() as h:
        h.node.http_fail_next = [429]
        h.store.ready[ready(1).order_key] = ready(1)
        await h.submitter.step()
        assert h.node.pool == {} and h.store.next_nonce == 1
        h.store.ready[ready(2).order_key] = ready(2)

        await h.submitter.step()  # re-broadcasts nonce 0, sends nonce 1

        assert sorted(tx.nonce for tx in h.node.pool.values()) == [0, 1]
        assert [tx.nonce for tx in h.node.mine()] == [0, 1]


async def test_underpriced_replacement_is_bumped_again() -> None:
    """A replacement the node calls underpriced is not given up: the next stuck check bumps higher."""
    async with harness(stuck_after_s=1.0) as h:
        h.store.ready[ready(1).order_key] = ready(1)
        await h.submitter.step()
        original = h.node.sent[-1]
        h.node.base_fee = 5 * 10**9  # above the original max fee: nothing mines
        h.node.refuse_send = ["replacement transaction underpriced"]
        h.clock.now += 2
        await h.submitter.track()
        refused_fee = h.store.txs[0].max_fee  # stored before the node refused it
        h.clock.now += 2

        await h.submitter.track()

        accepted = h.node.sent[-1]
        assert refused_fee > original.max_fee
        assert accepted.nonce == 0 and accepted.max_fee > refused_fee
        assert [tx.hash for tx in h.node.pool.values()] == [accepted.hash]
