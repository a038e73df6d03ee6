"""The log watcher against a scripted node: paging, provider limits, reorgs, bad logs."""

from __future__ import annotations

import itertools

import pytest

from connector.ethereum import events
from connector.ethereum.rpc import JsonRpcClient
from connector.ethereum.watcher import LogWatcher
from enclave_bridge.errors import ChainError
from tests.support.fakenode import FakeChain, serve
from tests.support.logs import REGISTRY, submitted_log
from tests.support.memsink import MemorySink


def _ids(sink: MemorySink) -> list[bytes]:
    return [
        e.work_order_id for e in sink.events if isinstance(e, events.WorkOrderSubmitted)
    ]


async def _run(chain: FakeChain, sink: MemorySink, **kw: object) -> LogWatcher:
    async with serve(chain) as url, JsonRpcClient(url) as rpc:
        watcher = LogWatcher(rpc, REGISTRY, sink, **kw)  # type: ignore[arg-type]
        await watcher.poll()
        return watcher


@pytest.mark.parametrize(
    "limits",
    [
        {"max_range": 1000},
        {"max_results": 2},
        {"timeout_over_range": 500},
    ],
    ids=["range-32602", "results-32005", "timeout"],
)
async def test_provider_limits_split_the_range_and_lose_nothing(
    limits: dict[str, int],
) -> None:
    """Over 50,000 blocks with a few orders, every order is read once under each provider limit."""
    chain = FakeChain(**limits)
    wanted = []
    for block in (3, 777, 12_000, 12_001, 12_001, 33_333, 49_990):
        log = submitted_log(b"{}")
        wanted.append(bytes.fromhex(log["topics"][1][2:]))  # type: ignore[index]
        chain.add_log(block, **log)  # type: ignore[arg-type]
    chain.height = 50_000
    sink = MemorySink()

    watcher = await _run(chain, sink, confirmations=2, max_range=20_000)

    assert _ids(sink) == wanted
    assert sink.checkpoint is not None and sink.checkpoint.block == 49_998
    assert watcher.lag == 0
    # Never the same failing range twice in a row.
    calls = chain.getlogs_calls
    assert all(a != b for a, b in itertools.pairwise(calls))


async def test_a_block_that_always_fails_is_raised_not_skipped() -> None:
    """When even one block cannot be read, the watcher raises and the checkpoint stays."""
    chain = FakeChain(max_results=0)
    chain.add_log(5, **submitted_log(b"{}"))  # type: ignore[arg-type]
    chain.height = 10
    sink = MemorySink()

    with pytest.raises(ChainError):
        await _run(chain, sink, confirmations=0)

    assert sink.checkpoint is not None and sink.checkpoint.block == 4


async def test_failed_commit_does_not_advance_the_checkpoint() -> None:
    """If the database write fails, the next poll reads the same range again."""
    chain = FakeChain()
    chain.add_log(2, **submitted_log(b"{}"))  # type: ignore[arg-type]
    chain.height = 5
    sink = MemorySink(fail_commits=1)

    with pytest.raises(RuntimeError):
        await _run(chain, sink, confirmations=0)
    await _run(chain, sink, confirmations=0)

    assert len(_ids(sink)) == 1


async def test_reorg_deeper_than_confirmations_rolls_back_and_reads_the_new_logs() -> (
    None
):
    """Blocks already processed are replaced: their events are rolled back and the new ones read once."""
    chain = FakeChain()
    old = submitted_log(b"old")
    chain.add_log(8, **old)  # type: ignore[arg-type]
    chain.height = 12
    sink = MemorySink()
    await _run(chain, sink, confirmations=1)
    new = submitted_log(b"new")
    chain.reorg(depth=6, replacement={9: [dict(new, address=REGISTRY.lower())]})
    chain.mine(2)

    await _run(chain, sink, confirmations=1)

    assert sink.rollbacks == [6]
    assert [
        e.request for e in sink.events if isinstance(e, events.WorkOrderSubmitted)
    ] == [b"new"]


async def test_reorg_shallower_than_confirmations_is_invisible() -> None:
    """A reorg of unconfirmed blocks changes nothing already recorded."""
    chain = FakeChain()
    chain.add_log(5, **submitted_log(b"a"))  # type: ignore[arg-type]
    chain.height = 20
    sink = MemorySink()
    await _run(chain, sink, confirmations=5)
    chain.reorg(depth=3)
    chain.mine(1)

    await _run(chain, sink, confirmations=5)

    assert sink.rollbacks == []
    assert len(sink.events) == 1


async def test_malformed_log_is_quarantined_and_the_next_one_processed() -> None:
    """A log that does not decode is recorded as malformed; later valid logs still flow."""
    chain = FakeChain()
    bad = submitted_log(b"abc")
    bad["topics"] = [*bad["topics"], "0x" + "00" * 32]  # type: ignore[misc]
    chain.add_log(3, **bad)  # type: ignore[arg-type]
    chain.add_log(4, **submitted_log(b"good"))  # type: ignore[arg-type]
    chain.height = 6
    sink = MemorySink()

    await _run(chain, sink, confirmations=0)

    kinds = [type(e).__name__ for e in sink.events]
    assert kinds == ["MalformedLog", "WorkOrderSubmitted"]
    assert sink.checkpoint is not None and sink.checkpoint.block == 6


async def test_removed_logs_are_ignored() -> None:
    """A log flagged removed by the node is not dispatched; one without the key counts as live."""
    chain = FakeChain()
    chain.add_log(3, **submitted_log(b"gone"), removed=True)  # type: ignore[arg-type]
    chain.add_log(3, **submitted_log(b"kept"))  # type: ignore[arg-type]
    chain.height = 4
    sink = MemorySink()

    await _run(chain, sink, confirmations=0)

    assert [
        e.request for e in sink.events if isinstance(e, events.WorkOrderSubmitted)
    ] == [b"kept"]


async def test_safe_tag_confirmation_uses_the_node_block() -> None:
    """With confirmations='safe' the watcher stops at the node's safe block."""
    chain = FakeChain()
    chain.height = 30
    sink = MemorySink()

    await _run(chain, sink, confirmations="safe")

    assert sink.checkpoint is not None and sink.checkpoint.block == 26


async def test_node_http_errors_surface_as_node_unavailable() -> None:
    """HTTP 429 and 503 become NodeUnavailable for the caller's retry loop."""
    from enclave_bridge.errors import NodeUnavailable

    chain = FakeChain(http_fail_next=[429])
    chain.height = 3

    with pytest.raises(NodeUnavailable, match="HTTP 429"):
        await _run(chain, MemorySink(), confirmations=0)
