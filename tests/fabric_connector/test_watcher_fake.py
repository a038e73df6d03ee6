"""The Fabric watcher against scripted ChaincodeEvents streams (no peer)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence

import pytest
from fabric_protos.peer import chaincode_event_pb2

from connector.fabric import events as ev
from connector.fabric.gateway import EventBlock
from connector.fabric.watcher import FabricBatch, FabricCheckpoint, FabricWatcher
from enclave_bridge.errors import NodeUnavailable


class MemorySink:
    """Keeps batches in memory; what a restart would load is the last checkpoint."""

    def __init__(self) -> None:
        self.batches: list[FabricBatch] = []
        self.checkpoint: FabricCheckpoint | None = None

    async def load_checkpoint(self) -> FabricCheckpoint | None:
        return self.checkpoint

    async def commit(self, batch: FabricBatch) -> None:
        self.batches.append(batch)
        self.checkpoint = batch.checkpoint

    def orders(self) -> list[str]:
        return [
            e.work_order_id for b in self.batches for e in b.events
            if isinstance(e, ev.OrderSubmitted)
        ]

    def malformed(self) -> list[ev.MalformedEvent]:
        return [e for b in self.batches for e in b.events if isinstance(e, ev.MalformedEvent)]


def submitted(tx_id: str, work_order_id: str | None) -> chaincode_event_pb2.ChaincodeEvent:
    order = {
        "orderKey": os.urandom(32).hex(), "workOrderId": work_order_id, "workerId": "w",
        "requesterId": "r", "requester": {"mspId": "Org1MSP", "id": "x"}, "request": "{}",
    }
    return raw_event(tx_id, json.dumps({"orders": [order]}).encode())


def raw_event(tx_id: str, payload: bytes) -> chaincode_event_pb2.ChaincodeEvent:
    return chaincode_event_pb2.ChaincodeEvent(
        chaincode_id="tcbridge", tx_id=tx_id, event_name="WorkOrderSubmitted",
        payload=payload,
    )


class ScriptedPeer:
    """Serves fixed blocks, honouring the start block and ``after_transaction_id``.

    ``fail_after`` makes a stream break after that many blocks (once per entry).
    """

    def __init__(self, blocks: Sequence[EventBlock], fail_after: Sequence[int] = ()) -> None:
        self.blocks = list(blocks)
        self.fail_after = list(fail_after)
        self.requests: list[tuple[int, str]] = []

    async def events(self, start: int, after: str) -> AsyncIterator[EventBlock]:
        self.requests.append((start, after))
        limit = self.fail_after.pop(0) if self.fail_after else None
        sent = 0
        for block in self.blocks:
            if block.block_number < start:
                continue
            events = block.events
            if block.block_number == start and after:
                ids = [e.tx_id for e in events]
                events = events[ids.index(after) + 1:] if after in ids else events
            if limit is not None and sent == limit:
                raise NodeUnavailable("the peer went away")
            sent += 1
            yield EventBlock(block.block_number, events)
        await asyncio.Event().wait()


async def run_until(watcher: FabricWatcher, done: object) -> None:
    assert callable(done)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.watch(stop))
    for _ in range(500):
        if done() or task.done():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_a_repeated_transaction_is_recorded_once() -> None:
    """A stream that delivers a, b, b, c yields three orders, each once."""
    a, b, c = submitted("a", "wo-a"), submitted("b", "wo-b"), submitted("c", "wo-c")
    peer = ScriptedPeer([EventBlock(5, [a, b, b]), EventBlock(6, [c])])
    sink = MemorySink()
    watcher = FabricWatcher(peer.events, sink, start_block=5)
    await run_until(watcher, lambda: len(sink.orders()) >= 3)
    assert sink.orders() == ["wo-a", "wo-b", "wo-c"]
    assert sink.checkpoint == FabricCheckpoint(6, "c")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty payload"),
        (b"\xc3\x28{}", "not UTF-8"),
        (b"[1]", "not a JSON object"),
        (b'{"orders":{}}', "no 'orders' array"),
        (b"{not json", "not JSON"),
    ],
    ids=["empty", "non-utf8", "array", "orders-not-array", "not-json"],
)
async def test_malformed_payload_is_quarantined_and_the_next_event_flows(
    payload: bytes, reason: str
) -> None:
    """A bad payload becomes one malformed record with its position; the next order follows."""
    peer = ScriptedPeer([EventBlock(3, [raw_event("bad", payload), submitted("ok", "wo")])])
    sink = MemorySink()
    watcher = FabricWatcher(peer.events, sink, start_block=3)
    await run_until(watcher, lambda: sink.orders())
    [bad] = sink.malformed()
    assert (bad.ref.block_number, bad.ref.tx_id, bad.ref.index) == (3, "bad", 0)
    assert reason in bad.reason
    assert sink.orders() == ["wo"]


async def test_null_work_order_id_is_malformed() -> None:
    """An order whose workOrderId is null is quarantined, not recorded as an order."""
    peer = ScriptedPeer([EventBlock(1, [submitted("n", None), submitted("ok", "wo")])])
    sink = MemorySink()
    await run_until(FabricWatcher(peer.events, sink, start_block=1), lambda: sink.orders())
    [bad] = sink.malformed()
    assert "workOrderId must be non-empty text, found null" in bad.reason
    assert sink.orders() == ["wo"]


async def test_a_broken_stream_reconnects_from_the_checkpoint() -> None:
    """After the stream breaks, the watcher resumes at (block, last tx) and loses nothing."""
    blocks = [
        EventBlock(1, [submitted("t1", "wo-1"), submitted("t2", "wo-2")]),
        EventBlock(2, [submitted("t3", "wo-3")]),
        EventBlock(4, [submitted("t4", "wo-4")]),
    ]
    peer = ScriptedPeer(blocks, fail_after=[1, 0, 1])
    sink = MemorySink()
    watcher = FabricWatcher(peer.events, sink, start_block=1, sleep=no_sleep)
    await run_until(watcher, lambda: len(sink.orders()) >= 4)
    assert sink.orders() == ["wo-1", "wo-2", "wo-3", "wo-4"]
    assert peer.requests[:3] == [(1, ""), (1, "t2"), (1, "t2")]
    assert watcher.reconnects == 3


async def test_reconnects_are_bounded() -> None:
    """A stream that never works ends the watcher with NodeUnavailable after bounded retries."""
    peer = ScriptedPeer([EventBlock(1, [submitted("t", "wo")])], fail_after=[0] * 100)
    watcher = FabricWatcher(peer.events, MemorySink(), start_block=1, sleep=no_sleep)
    with pytest.raises(NodeUnavailable, match="failed 20 times in a row"):
        await watcher.watch(asyncio.Event())
