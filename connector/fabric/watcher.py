"""The Fabric event watcher: registry events from ``ChaincodeEvents``, once each.

Fabric has no reorgs: a committed block is final, and the gateway streams
events of valid transactions only (an MVCC-conflicted transaction's event
never arrives). What the watcher must get right is resuming. Its
checkpoint is ``(block, last transaction id processed in that block)``,
written with each transaction's events in one database transaction, and a
restart asks for the stream from that block with ``after_transaction_id``:
the peer skips the block's events up to and including that transaction, so
a crash between two transactions of one block neither repeats nor skips
any. A checkpoint without a transaction id means the whole block is done.

A stream that breaks (the peer went away) ends :meth:`FabricWatcher.run`
with ``NodeUnavailable``; :meth:`FabricWatcher.watch` reconnects from the
checkpoint with bounded, logged exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from connector.fabric.events import FabricEvent, decode_event
from connector.fabric.gateway import EventBlock
from enclave_bridge.errors import ChainError, NodeUnavailable

log = logging.getLogger("tcbridge.fabric.watcher")

# Reconnect backoff: doubles from the first delay to the cap, and gives up
# (raising) after this many consecutive failures with no event in between.
RECONNECT_FIRST_S = 0.2
RECONNECT_CAP_S = 10.0
RECONNECT_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class FabricCheckpoint:
    """Events up to ``tx_id`` in ``block`` are recorded (all of it if ``tx_id`` is None)."""

    block: int
    tx_id: str | None = None

    def resume_at(self) -> tuple[int, str]:
        """Where to ask the stream to start: block and ``after_transaction_id``."""
        if self.tx_id is None:
            return self.block + 1, ""
        return self.block, self.tx_id


@dataclass(frozen=True, slots=True)
class FabricBatch:
    """The decoded events of one transaction and the checkpoint after it."""

    events: Sequence[FabricEvent]
    checkpoint: FabricCheckpoint


class FabricSink(Protocol):
    """Where the watcher's output goes (the store, or a test double)."""

    async def load_checkpoint(self) -> FabricCheckpoint | None: ...

    async def commit(self, batch: FabricBatch) -> None:
        """Record the events and the checkpoint in one transaction."""


# ``(start block, after transaction id) -> blocks of events``: the gateway's
# ``chaincode_events``, or a scripted stream in tests.
EventSource = Callable[[int, str], AsyncIterator[EventBlock]]


class FabricWatcher:
    def __init__(
        self,
        events: EventSource,
        sink: FabricSink,
        *,
        start_block: int = 0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.events = events
        self.sink = sink
        self.start_block = start_block
        self.sleep = sleep
        self.checkpoint: FabricCheckpoint | None = None
        self.recorded = 0
        self.reconnects = 0
        self.on_commit: Callable[[FabricBatch], None] | None = None

    async def load(self) -> FabricCheckpoint:
        if self.checkpoint is None:
            stored = await self.sink.load_checkpoint()
            self.checkpoint = stored or FabricCheckpoint(self.start_block - 1)
        return self.checkpoint

    async def run(self) -> None:
        """Follow the stream from the checkpoint until it breaks (raises)."""
        checkpoint = await self.load()
        block, after = checkpoint.resume_at()
        log.info(
            "following chaincode events from block %d%s",
            block, f" after transaction {after}" if after else "",
        )
        async for event_block in self.events(block, after):
            await self._process(event_block)

    async def watch(self, stop: asyncio.Event) -> None:
        """Run until ``stop``, reconnecting with bounded backoff when the stream breaks."""
        failures = 0
        while not stop.is_set():
            recorded = self.recorded
            runner = asyncio.create_task(self.run())
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                {runner, stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            stopper.cancel()
            if runner not in done:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                return
            try:
                runner.result()
            except (NodeUnavailable, ChainError) as exc:
                failures = 1 if self.recorded > recorded else failures + 1
                if failures > RECONNECT_ATTEMPTS:
                    raise NodeUnavailable(
                        f"the chaincode event stream failed {RECONNECT_ATTEMPTS} times"
                        f" in a row; last error: {exc}"
                    ) from exc
                delay = min(RECONNECT_CAP_S, RECONNECT_FIRST_S * 2 ** (failures - 1))
                self.reconnects += 1
                log.warning(
                    "chaincode event stream broke (attempt %d, reconnecting in %.1f s):"
                    " %s", failures, delay, exc,
                )
                await self.sleep(delay)

    async def _process(self, event_block: EventBlock) -> None:
        checkpoint = self.checkpoint
        assert checkpoint is not None
        number = event_block.block_number
        for event in event_block.events:
            tx_id = str(event.tx_id)
            if _already_done(checkpoint, number, tx_id):
                # A stream may repeat a transaction (a, b, b, c): nothing new.
                log.debug("skipping repeated event of %s in block %d", tx_id, number)
                continue
            items = decode_event(
                str(event.event_name), bytes(event.payload), number, tx_id
            )
            checkpoint = FabricCheckpoint(number, tx_id)
            batch = FabricBatch(items, checkpoint)
            await self.sink.commit(batch)
            self.checkpoint = checkpoint
            self.recorded += len(items)
            if self.on_commit is not None:
                self.on_commit(batch)


def _already_done(checkpoint: FabricCheckpoint, block: int, tx_id: str) -> bool:
    """True for an event the checkpoint already covers."""
    if block < checkpoint.block:
        return True
    if block == checkpoint.block:
        return checkpoint.tx_id is None or checkpoint.tx_id == tx_id
    return False
