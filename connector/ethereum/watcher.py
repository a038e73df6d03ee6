"""The Ethereum log watcher: confirmed registry events, once each, from a checkpoint.

Each poll:

1. Reads the head and derives the confirmed height: ``head - depth``, or
   the node's ``safe`` / ``finalized`` block.
2. Checks the checkpoint's newest block hash against the node. A different
   hash means a reorg reached blocks already processed (deeper than the
   confirmation depth): walk back through the remembered hashes to the
   fork point, tell the sink to roll back everything above it, and resume
   from there. Anvil never re-sends logs with ``removed: true``, so the
   hash check is the only reliable signal; a ``removed`` log seen from
   other nodes triggers the same check.
3. Pages ``eth_getLogs`` over ``[checkpoint + 1, confirmed]`` in ranges,
   filtered by the registry address and the event topics. No node-side
   filters: they vanish when a node restarts. A range the provider refuses
   (too wide, too many results, timeout) is halved and retried; the range
   grows back after successes. A single block that still fails is raised,
   never skipped. The checkpoint only advances past ranges that succeeded.
4. Fetches the header of every block that holds logs and of the range's
   last block in one batch, and checks the logs' block hashes against them:
   a mismatch means a reorg raced the query, so the range is read again.
5. Hands the decoded events, the new checkpoint and the recent block
   hashes to the sink, which writes them in one database transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.ethereum.events import ALL_TOPICS, RegistryEvent, decode_log
from connector.ethereum.rpc import JsonRpcClient, RpcError
from enclave_bridge.errors import ChainError, NodeUnavailable

# Decodes one raw log; must not raise (malformed logs become MalformedLog).
LogDecoder = Callable[[dict[str, Any]], Any]

log = logging.getLogger("tcbridge.watcher")

# How many recent block hashes the checkpoint remembers. A reorg deeper
# than this cannot be located and stops the watcher with an error.
REMEMBERED_BLOCKS = 128

# Consecutive reads whose logs and headers disagree before the node is
# declared faulty (a real reorg settles within one or two reads).
MAX_INCONSISTENT_READS = 5

# JSON-RPC error codes and messages providers use for "query too large".
_RANGE_CODES = {-32005, -32602, -32000, -32603}
_RANGE_WORDS = (
    "range",
    "too many",
    "limit",
    "exceed",
    "10000",
    "timeout",
    "timed out",
    "response size",
    "query returned more",
)


@dataclass
class Checkpoint:
    """The last block fully processed and the hashes of the blocks before it."""

    block: int
    hashes: dict[int, str] = field(default_factory=dict)

    def remember(self, number: int, block_hash: str) -> None:
        self.hashes[number] = block_hash
        floor = number - REMEMBERED_BLOCKS
        for old in [n for n in self.hashes if n <= floor]:
            del self.hashes[old]


@dataclass(frozen=True)
class WatchBatch:
    """What one successful range yields: events in chain order and where we are now."""

    # RegistryEvent with the default decoder; whatever ``decoder`` returns else.
    events: Sequence[RegistryEvent] | Sequence[Any]
    checkpoint: Checkpoint
    first_block: int
    last_block: int


class WatcherSink(Protocol):
    """Where the watcher's output goes (the work-order store, or a test double)."""

    async def load_checkpoint(self) -> Checkpoint | None: ...

    async def commit(self, batch: WatchBatch) -> None:
        """Record the events and the checkpoint in one transaction."""

    async def rollback_above(self, block: int, checkpoint: Checkpoint) -> None:
        """Undo everything that came from blocks above ``block`` (a reorg)."""


class ReorgTooDeep(ChainError):
    """The chain changed below every block hash the checkpoint remembers."""


class LogWatcher:
    def __init__(
        self,
        rpc: JsonRpcClient,
        registry: str,
        sink: WatcherSink,
        *,
        confirmations: int | str = 1,
        start_block: int = 0,
        max_range: int = 2000,
        topics: Sequence[str] = ALL_TOPICS,
        decoder: LogDecoder = decode_log,
    ) -> None:
        """Watch ``registry`` (any contract) for ``topics``, decoded by ``decoder``.

        The defaults serve the WorkOrderRegistry; oracle-contract mode passes
        ``events.ORACLE_TOPICS`` and ``events.decode_oracle_log``.
        """
        self.rpc = rpc
        self.registry = registry.lower()
        self.topics = list(topics)
        self.decoder = decoder
        self.sink = sink
        self.confirmations = confirmations
        self.start_block = start_block
        self.max_range = max(1, max_range)
        self._range = self.max_range
        self.checkpoint: Checkpoint | None = None
        self.head = 0
        self.confirmed = 0
        self.reorgs = 0

    @property
    def lag(self) -> int:
        """Blocks between the confirmed height and what has been processed."""
        if self.checkpoint is None:
            return self.confirmed
        return max(0, self.confirmed - self.checkpoint.block)

    async def poll(self) -> int:
        """Process everything confirmed now; return how many events were recorded."""
        if self.checkpoint is None:
            self.checkpoint = await self.sink.load_checkpoint() or Checkpoint(
                self.start_block - 1
            )
        self.confirmed = await self._confirmed_height()
        await self._check_reorg()
        recorded = 0
        inconsistent = 0
        while self.checkpoint.block < self.confirmed:
            batch = await self._read_next_range()
            if batch is None:
                # The node's logs and headers disagreed: a reorg raced us.
                inconsistent += 1
                if inconsistent > MAX_INCONSISTENT_READS:
                    raise ChainError(
                        "the node keeps answering logs that do not match its own block"
                        " hashes; it may be faulty or still syncing"
                    )
                await self._check_reorg()
                continue
            await self.sink.commit(batch)
            self.checkpoint = batch.checkpoint
            recorded += len(batch.events)
        return recorded

    async def _confirmed_height(self) -> int:
        if isinstance(self.confirmations, str):
            block = await self.rpc.call(
                "eth_getBlockByNumber", self.confirmations, False
            )
            head = await self.rpc.call("eth_blockNumber")
            self.head = int(head, 16)
            if block is None:
                return -1
            return int(block["number"], 16)
        self.head = int(await self.rpc.call("eth_blockNumber"), 16)
        return self.head - self.confirmations

    async def _check_reorg(self) -> None:
        cp = self.checkpoint
        assert cp is not None
        if not cp.hashes:
            return
        newest = max(cp.hashes)
        if await self._hash_of(newest) == cp.hashes[newest]:
            return
        fork = await self._find_fork(cp)
        self.reorgs += 1
        log.warning(
            "reorg: block %d changed; rolling back to block %d",
            newest,
            fork,
            extra={"block": newest, "fork_block": fork},
        )
        kept = Checkpoint(fork, {n: h for n, h in cp.hashes.items() if n <= fork})
        await self.sink.rollback_above(fork, kept)
        self.checkpoint = kept

    async def _find_fork(self, cp: Checkpoint) -> int:
        numbers = sorted(cp.hashes, reverse=True)
        replies = await self.rpc.batch(
            [("eth_getBlockByNumber", [hex(n), False]) for n in numbers]
        )
        for number, reply in zip(numbers, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            if reply is not None and reply["hash"] == cp.hashes[number]:
                return number
        raise ReorgTooDeep(
            f"the chain changed below block {numbers[-1]}, the oldest block the checkpoint"
            " remembers; restore the store from a backup or reset the checkpoint"
        )

    async def _hash_of(self, number: int) -> str | None:
        block = await self.rpc.call("eth_getBlockByNumber", hex(number), False)
        return None if block is None else str(block["hash"])

    async def _read_next_range(self) -> WatchBatch | None:
        cp = self.checkpoint
        assert cp is not None
        start = cp.block + 1
        while True:
            end = min(self.confirmed, start + self._range - 1)
            try:
                logs = await self.rpc.call(
                    "eth_getLogs",
                    {
                        "address": self.registry,
                        "topics": [self.topics],
                        "fromBlock": hex(start),
                        "toBlock": hex(end),
                    },
                )
            except (RpcError, NodeUnavailable) as exc:
                if not _is_range_refusal(exc) or end == start:
                    raise
                self._range = max(1, (end - start + 1) // 2)
                log.info(
                    "eth_getLogs refused blocks %d-%d (%s); retrying with %d blocks",
                    start,
                    end,
                    exc,
                    self._range,
                )
                continue
            batch = await self._verify_and_decode(logs, start, end)
            if batch is not None and self._range < self.max_range:
                self._range = min(self.max_range, self._range * 2)
            return batch

    async def _verify_and_decode(
        self, logs: Any, start: int, end: int
    ) -> WatchBatch | None:
        if not isinstance(logs, list):
            raise NodeUnavailable(
                f"eth_getLogs answered {type(logs).__name__}, not a list"
            )
        live = [entry for entry in logs if not entry.get("removed", False)]
        if len(live) != len(logs):
            log.warning(
                "node sent removed logs for blocks %d-%d; re-checking for a reorg",
                start,
                end,
            )
        # Remember every recent block's hash (not only those with logs), so a
        # later reorg can be located exactly.
        recent = range(max(start, end - REMEMBERED_BLOCKS + 1), end + 1)
        numbers = sorted(
            {int(entry["blockNumber"], 16) for entry in live} | set(recent)
        )
        headers = await self.rpc.batch(
            [("eth_getBlockByNumber", [hex(n), False]) for n in numbers]
        )
        hashes: dict[int, str] = {}
        for number, header in zip(numbers, headers, strict=True):
            if isinstance(header, Exception):
                raise header
            if header is None:
                return None
            hashes[number] = header["hash"]
        for entry in live:
            if hashes[int(entry["blockNumber"], 16)] != entry["blockHash"]:
                log.info(
                    "logs of blocks %d-%d came from a replaced block; reading again",
                    start,
                    end,
                )
                return None
        return self._decode(live, start, end, hashes)

    def _decode(
        self, logs: list[dict[str, Any]], start: int, end: int, hashes: dict[int, str]
    ) -> WatchBatch:
        cp = self.checkpoint
        assert cp is not None
        logs.sort(key=lambda e: (int(e["blockNumber"], 16), int(e["logIndex"], 16)))
        events = [self.decoder(entry) for entry in logs]
        nxt = Checkpoint(end, dict(cp.hashes))
        for number, block_hash in hashes.items():
            nxt.remember(number, block_hash)
        return WatchBatch(events, nxt, start, end)


def _is_range_refusal(exc: Exception) -> bool:
    if isinstance(exc, NodeUnavailable):
        text = str(exc).lower()
        return "timeout" in text or "timed out" in text or "http 5" in text
    if isinstance(exc, RpcError):
        text = exc.rpc_message.lower()
        return exc.code in _RANGE_CODES and any(w in text for w in _RANGE_WORDS)
    return False
