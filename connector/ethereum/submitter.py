"""The Ethereum submitter: completions on-chain, once, without nonce gaps.

Invariants, and why:

- **Record before broadcast.** The nonce is allocated, the transaction
  signed and its raw bytes stored, and the orders it carries marked
  SUBMITTED, in one database transaction, before anything is sent. A crash
  after that commit is recovered by re-broadcasting the stored bytes (the
  same bytes have the same hash, so the node either knows them or mines
  them once); a crash before it leaves no trace at all.
- **Ask the contract before paying.** ``workOrderGet`` is checked for every
  order in a batch just before signing; an order already completed or
  cancelled is not sent again.
- **No nonce gap.** Every failure that happens before a transaction is
  stored (fee lookup, gas estimation, a full mempool) allocates nothing. A
  stored transaction the node refuses for good is replaced at the same
  nonce, so the nonces after it never wait behind a hole.
- **Completion is an event, not a receipt.** A mined receipt only marks
  the transaction; each order is settled by its ``WorkOrderCompleted`` /
  ``CompletionSkipped`` event, read by the watcher at the confirmed height.
- **Stuck transactions are replaced** with both fee fields raised by at
  least the node's minimum bump (10 % on geth and anvil; we use 13 %), up
  to a configured cap. "replacement transaction underpriced" means bump
  again; "nonce too low" means one of our transactions for that nonce was
  mined: find its receipt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.ethereum.rpc import JsonRpcClient, RpcError
from connector.ethereum.transactions import (
    ORDER_PENDING,
    Completion,
    SignedTx,
    TxSigner,
    decode_get,
    encode_completion_call,
    encode_get,
)
from connector.faults import crash_point
from enclave_bridge.errors import ChainError, NodeUnavailable

log = logging.getLogger("tcbridge.submitter")

# ABI overhead of one batch item beyond its response and signature bytes
# (head words, offsets, lengths, padding).
ITEM_OVERHEAD_BYTES = 256
# Headroom over eth_estimateGas: the state can change between estimate and
# inclusion (another order in the batch completed by someone else).
GAS_HEADROOM = 1.25
GWEI = 10**9
# A computed batch gas limit: measured 52,500 gas per 1 KiB item in a batch
# of 50 on anvil (contracts/README.md); these constants give about 70 %
# headroom there, and cover the EIP-7623 calldata floor (40 gas a byte)
# plus log data (8 gas a byte) for any item size.
BATCH_BASE_GAS = 60_000
ITEM_GAS = 40_000
ITEM_GAS_PER_BYTE = 48
# The registry's COMPLETION_RESERVE and COMPLETION_RESERVE_PER_BYTE.
CALLBACK_RESERVE = 60_000
CALLBACK_RESERVE_PER_BYTE = 16


@dataclass(frozen=True, slots=True)
class ReadyResult:
    """A signed result waiting to go on-chain."""

    order_key: bytes
    status: int
    response: bytes
    signature: bytes
    requester: str = ""
    ready_at: float = 0.0
    callback_gas: int = 0

    def completion(self) -> Completion:
        return Completion(self.order_key, self.status, self.response, self.signature)

    @property
    def size(self) -> int:
        return len(self.response) + len(self.signature) + ITEM_OVERHEAD_BYTES

    @property
    def callback_allowance(self) -> int:
        """Gas the registry demands be left for this item's callback.

        ``eth_estimateGas`` on a batch finds the cheapest way to succeed, and
        for a batch that is to skip every callback (CompletionSkipped reason
        5), so the allowance is added to the estimate. It mirrors the
        registry's own check: callback gas + 1/63 of it + a fixed reserve +
        16 gas per response byte.
        """
        if not self.callback_gas:
            return 0
        return (
            self.callback_gas
            + self.callback_gas // 63
            + CALLBACK_RESERVE
            + CALLBACK_RESERVE_PER_BYTE * len(self.response)
        )


@dataclass
class PendingTx:
    """A stored transaction not yet known to be mined."""

    nonce: int
    raw: bytes
    hashes: list[str]
    max_fee: int
    max_priority_fee: int
    gas: int
    data: bytes
    order_keys: list[bytes]
    sent_at: float


class SubmitterStore(Protocol):
    """The submitter's view of the work-order store."""

    async def ready_results(self, limit: int) -> list[ReadyResult]: ...

    async def record_send(
        self,
        sender: str,
        chain_nonce: int,
        build: Callable[[int], SignedTx],
        order_keys: Sequence[bytes],
        gas: int,
        data: bytes,
    ) -> SignedTx:
        """Allocate the next nonce (never below ``chain_nonce``), call ``build``
        with it, store the raw transaction and mark the orders SUBMITTED, all in
        one database transaction; return what ``build`` returned."""

    async def record_replacement(self, sender: str, tx: SignedTx) -> None:
        """Store a fee-bumped replacement for the transaction at ``tx.nonce``."""

    async def pending_transactions(self, sender: str) -> list[PendingTx]: ...

    async def mark_mined(
        self, sender: str, nonce: int, tx_hash: str, ok: bool, gas_used: int
    ) -> None: ...

    async def reopen_from(self, sender: str, nonce: int) -> int:
        """Track again transactions at ``nonce`` and above that were counted mined."""

    async def release(self, order_keys: Sequence[bytes], reason: str) -> None:
        """SUBMITTED -> RESULT_READY: the completion must be sent again."""

    async def settle_unsendable(self, order_keys: Sequence[bytes], state: int) -> None:
        """Orders the contract already completed or cancelled: no transaction needed."""


@dataclass
class SubmitterStats:
    sent: int = 0
    replaced: int = 0
    rebroadcast: int = 0
    mined: int = 0
    reverted: int = 0
    gas_used: int = 0
    skipped_onchain: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)


class Submitter:
    def __init__(
        self,
        rpc: JsonRpcClient,
        signer: TxSigner,
        registry: str,
        store: SubmitterStore,
        *,
        max_items: int = 50,
        max_bytes: int = 120_000,
        batch_wait_s: float = 0.2,
        fee_cap_wei: int = 500 * GWEI,
        bump_percent: int = 13,
        stuck_after_s: float = 30.0,
        block_gas_limit: int = 30_000_000,
        gas_cap_per_requester_hour: int = 0,
        confirmed_height: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        encode_call: Callable[[Sequence[Completion]], bytes] = encode_completion_call,
    ) -> None:
        self.rpc = rpc
        # The registry's workOrderComplete(Batch) unless told otherwise (the
        # oracle's fulfill); the target contract must answer workOrderGet.
        self.encode_call = encode_call
        self.signer = signer
        self.registry = registry
        self.store = store
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.batch_wait_s = batch_wait_s
        self.fee_cap_wei = fee_cap_wei
        self.bump_percent = bump_percent
        self.stuck_after_s = stuck_after_s
        self.block_gas_limit = block_gas_limit
        self.clock = clock
        self.stats = SubmitterStats()
        self.pending_count = 0
        self.gas_cap = RequesterGasCap(gas_cap_per_requester_hour, clock)
        # A receipt counts once its block is confirmed; until then a reorg may
        # still drop the transaction, and it must stay tracked to be re-sent.
        self.confirmed_height = confirmed_height
        self._requester_of: dict[bytes, str] = {}

    # -- one step -------------------------------------------------------

    async def step(self) -> int:
        """Track what is in flight, then send what is ready; return orders sent."""
        await self.track()
        return await self.send_ready()

    async def resync(self) -> None:
        """After a deep reorg: re-track our transactions the chain no longer holds.

        The chain's count of our mined transactions is the first nonce a
        reorg may have emptied; every stored transaction from there up is
        tracked again and, if the node does not know it, re-broadcast.
        """
        mined = _int_reply(
            await self.rpc.call("eth_getTransactionCount", self.signer.address, "latest")
        )
        reopened = await self.store.reopen_from(self.signer.address, mined)
        if reopened:
            log.warning("reorg: %d completion transactions from nonce %d are tracked again",
                        reopened, mined, extra={"nonce": mined})

    async def track(self) -> None:
        """Settle mined transactions; re-broadcast dropped ones; bump stuck ones."""
        pending = await self.store.pending_transactions(self.signer.address)
        self.pending_count = len(pending)
        if not pending:
            return
        calls: list[tuple[str, Sequence[Any]]] = [
            ("eth_getTransactionCount", [self.signer.address, "latest"])
        ]
        for tx in pending:
            calls += [("eth_getTransactionReceipt", [h]) for h in tx.hashes]
        replies = await self.rpc.batch(calls)
        mined_nonce = _int_reply(replies[0])
        cursor = 1
        for tx in pending:
            receipts = replies[cursor : cursor + len(tx.hashes)]
            cursor += len(tx.hashes)
            receipt = next((r for r in receipts if isinstance(r, dict)), None)
            if receipt is not None and not self._confirmed(receipt):
                continue
            if receipt is not None:
                await self._settle_receipt(tx, receipt)
            elif tx.nonce < mined_nonce:
                # Another transaction took this nonce and none of ours has a
                # receipt: the node may not have indexed it yet. Ask again later
                # unless it has been long; then the completions must be re-sent.
                if self.clock() - tx.sent_at > self.stuck_after_s:
                    await self._abandon(tx, "nonce used by another transaction")
            else:
                await self._keep_alive(tx)

    def _confirmed(self, receipt: dict[str, Any]) -> bool:
        if self.confirmed_height is None:
            return True
        return int(receipt.get("blockNumber") or "0x0", 16) <= self.confirmed_height()

    async def _settle_receipt(self, tx: PendingTx, receipt: dict[str, Any]) -> None:
        ok = receipt.get("status") == "0x1"
        gas_used = int(receipt.get("gasUsed", "0x0"), 16)
        await self.store.mark_mined(
            self.signer.address, tx.nonce, receipt["transactionHash"], ok, gas_used
        )
        self.stats.mined += 1
        self.stats.gas_used += gas_used
        share = gas_used // max(1, len(tx.order_keys))
        for key in tx.order_keys:
            self.gas_cap.spend(self._requester_of.pop(key, ""), share)
        if ok:
            log.debug(
                "tx %s mined (nonce %d, %d orders)",
                receipt["transactionHash"],
                tx.nonce,
                len(tx.order_keys),
            )
            return
        self.stats.reverted += 1
        reason = await self._revert_reason(tx, receipt)
        log.error(
            "completion tx %s reverted: %s; the orders go back to RESULT_READY once",
            receipt["transactionHash"],
            reason,
            extra={"tx_hash": receipt["transactionHash"], "nonce": tx.nonce},
        )
        await self.store.release(tx.order_keys, f"reverted: {reason}")

    async def _revert_reason(self, tx: PendingTx, receipt: dict[str, Any]) -> str:
        try:
            await self.rpc.call(
                "eth_call",
                {
                    "from": self.signer.address,
                    "to": self.registry,
                    "data": "0x" + tx.data.hex(),
                    "gas": hex(tx.gas),
                },
                receipt["blockNumber"],
            )
        except RpcError as exc:
            return exc.rpc_message
        except NodeUnavailable:
            return "unknown (node unavailable)"
        return "unknown (it succeeds when replayed)"

    async def _keep_alive(self, tx: PendingTx) -> None:
        age = self.clock() - tx.sent_at
        if age >= self.stuck_after_s:
            await self._bump(tx)
            return
        known = await self.rpc.call("eth_getTransactionByHash", tx.hashes[-1])
        if known is None:
            await self._broadcast(tx.raw, tx.nonce, rebroadcast=True)

    async def _bump(self, tx: PendingTx) -> None:
        base_fee, tip = await self._fees()
        factor = 100 + self.bump_percent
        new_tip = max(tip, tx.max_priority_fee * factor // 100 + 1)
        new_fee = max(2 * base_fee + new_tip, tx.max_fee * factor // 100 + 1)
        if new_fee > self.fee_cap_wei:
            if tx.max_fee >= self.fee_cap_wei:
                log.error(
                    "tx nonce %d is stuck at the fee cap %d wei; raise max_fee_cap_gwei",
                    tx.nonce,
                    self.fee_cap_wei,
                )
                return
            new_fee = self.fee_cap_wei
            new_tip = min(new_tip, new_fee)
        signed = self.signer.sign(
            nonce=tx.nonce,
            to=self.registry,
            data=tx.data,
            gas=tx.gas,
            max_fee=new_fee,
            max_priority_fee=new_tip,
        )
        await self.store.record_replacement(self.signer.address, signed)
        self.stats.replaced += 1
        log.info(
            "replacing stuck tx nonce %d with fees %d/%d wei",
            tx.nonce,
            new_fee,
            new_tip,
            extra={"nonce": tx.nonce, "tx_hash": signed.hash},
        )
        await self._broadcast(signed.raw, tx.nonce, rebroadcast=False)

    async def _abandon(self, tx: PendingTx, why: str) -> None:
        log.warning(
            "tx nonce %d abandoned (%s); its %d orders will be re-sent",
            tx.nonce,
            why,
            len(tx.order_keys),
        )
        await self.store.mark_mined(
            self.signer.address, tx.nonce, tx.hashes[-1], False, 0
        )
        await self.store.release(tx.order_keys, why)

    # -- sending --------------------------------------------------------

    async def send_ready(self) -> int:
        ready = await self.store.ready_results(self.max_items * 4)
        if not ready:
            return 0
        oldest = min(r.ready_at for r in ready)
        if len(ready) < self.max_items and self.clock() - oldest < self.batch_wait_s:
            return 0
        ready = [r for r in ready if self.gas_cap.allows(r.requester)]
        if not ready:
            return 0
        ready = await self._drop_settled(ready)
        sent = 0
        for batch in self._batches(ready):
            sent += await self._send_batch(batch)
        return sent

    async def _drop_settled(self, ready: list[ReadyResult]) -> list[ReadyResult]:
        replies = await self.rpc.batch(
            [
                (
                    "eth_call",
                    [
                        {
                            "to": self.registry,
                            "data": "0x" + encode_get(r.order_key).hex(),
                        },
                        "latest",
                    ],
                )
                for r in ready
            ]
        )
        keep: list[ReadyResult] = []
        settled: dict[int, list[bytes]] = {}
        for item, reply in zip(ready, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            view = decode_get(bytes.fromhex(reply[2:]))
            if view.state == ORDER_PENDING:
                keep.append(item)
            else:
                settled.setdefault(view.state, []).append(item.order_key)
        for state, keys in settled.items():
            self.stats.skipped_onchain += len(keys)
            log.info(
                "%d orders already settled on-chain (state %d); not sending",
                len(keys),
                state,
            )
            await self.store.settle_unsendable(keys, state)
        return keep

    def _batches(self, ready: list[ReadyResult]) -> list[list[ReadyResult]]:
        batches: list[list[ReadyResult]] = []
        current: list[ReadyResult] = []
        size = 0
        for item in ready:
            if current and (
                len(current) >= self.max_items or size + item.size > self.max_bytes
            ):
                batches.append(current)
                current, size = [], 0
            current.append(item)
            size += item.size
        if current:
            batches.append(current)
        return batches

    async def _send_batch(self, batch: list[ReadyResult]) -> int:
        data = self.encode_call([r.completion() for r in batch])
        gas = await self._gas_for(data, batch)
        if gas is None:
            if len(batch) == 1:
                return 0
            half = len(batch) // 2
            return await self._send_batch(batch[:half]) + await self._send_batch(
                batch[half:]
            )
        base_fee, tip = await self._fees()
        max_fee = min(self.fee_cap_wei, 2 * base_fee + tip)
        tip = min(tip, max_fee)
        chain_nonce = _int_reply(
            await self.rpc.call(
                "eth_getTransactionCount", self.signer.address, "pending"
            )
        )

        def build(nonce: int) -> SignedTx:
            return self.signer.sign(
                nonce=nonce,
                to=self.registry,
                data=data,
                gas=gas,
                max_fee=max_fee,
                max_priority_fee=tip,
            )

        signed = await self.store.record_send(
            self.signer.address,
            chain_nonce,
            build,
            [r.order_key for r in batch],
            gas,
            data,
        )
        for r in batch:
            self._requester_of[r.order_key] = r.requester
        crash_point("submitter.after_record")
        await self._broadcast(signed.raw, signed.nonce, rebroadcast=False)
        crash_point("submitter.after_broadcast")
        self.stats.sent += 1
        log.debug(
            "sent %d completions in tx %s (nonce %d)",
            len(batch),
            signed.hash,
            signed.nonce,
        )
        return len(batch)

    async def _gas_for(self, data: bytes, batch: list[ReadyResult]) -> int | None:
        """The gas limit of a completion transaction, or None if it would revert.

        A single completion can revert, so it is estimated by the node. A
        batch never reverts for one bad item (the registry skips it), and
        ``eth_estimateGas`` binary-searches, costing 10-20 times an
        ``eth_call`` (measured: 180-300 ms a 100-item batch on anvil), so a
        batch gets a generous limit computed from its bytes, checked with one
        ``eth_call`` at that limit; the node is asked to estimate only if that
        call fails. Unused gas is not charged.
        """
        allowance = sum(r.callback_allowance for r in batch)
        if len(batch) == 1:
            return await self._estimate(data, allowance)
        gas = BATCH_BASE_GAS + allowance + sum(
            ITEM_GAS + ITEM_GAS_PER_BYTE * r.size for r in batch
        )
        if gas > self.block_gas_limit:
            return await self._estimate(data, allowance)
        try:
            await self.rpc.call(
                "eth_call",
                {"from": self.signer.address, "to": self.registry,
                 "data": "0x" + data.hex(), "gas": hex(gas)},
                "latest",
            )
        except RpcError:
            return await self._estimate(data, allowance)
        return gas

    async def _estimate(self, data: bytes, allowance: int = 0) -> int | None:
        try:
            est = await self.rpc.call(
                "eth_estimateGas",
                {
                    "from": self.signer.address,
                    "to": self.registry,
                    "data": "0x" + data.hex(),
                },
            )
        except RpcError as exc:
            log.error("completion would revert (%s); not sending it", exc.rpc_message)
            self.stats.last_error = exc.rpc_message
            return None
        gas = int(int(est, 16) * GAS_HEADROOM) + allowance
        if gas > self.block_gas_limit:
            return None
        return gas

    async def _fees(self) -> tuple[int, int]:
        block, tip = await self.rpc.batch(
            [
                ("eth_getBlockByNumber", ["latest", False]),
                ("eth_maxPriorityFeePerGas", []),
            ]
        )
        if isinstance(block, Exception):
            raise block
        base_fee = int(block.get("baseFeePerGas", "0x0"), 16)
        tip_wei = GWEI if isinstance(tip, Exception) else int(tip, 16)
        return base_fee, max(tip_wei, 1)

    async def _broadcast(self, raw: bytes, nonce: int, *, rebroadcast: bool) -> None:
        try:
            await self.rpc.call("eth_sendRawTransaction", "0x" + raw.hex())
        except NodeUnavailable as exc:
            # Stored already: the next track() re-broadcasts it.
            log.warning("broadcast of nonce %d failed (%s); will retry", nonce, exc)
            return
        except RpcError as exc:
            text = exc.rpc_message.lower()
            if "already known" in text or "known transaction" in text:
                return
            if "nonce too low" in text:
                log.info("nonce %d already mined; its receipt will settle it", nonce)
                return
            if "underpriced" in text:
                log.info("nonce %d: replacement underpriced; will bump again", nonce)
                return
            self.stats.last_error = exc.rpc_message
            log.error("node refused tx nonce %d: %s", nonce, exc.rpc_message)
            return
        if rebroadcast:
            self.stats.rebroadcast += 1


class RequesterGasCap:
    """A cap on the completion gas spent for each requester in a sliding hour.

    The relayer pays for every completion, error results included, so one
    requester flooding bad orders could drain it. Over the cap, a
    requester's results wait (RESULT_READY, nothing lost) until the hour
    slides. Spending is counted in memory: a restart forgets the last
    hour, which at worst lets one more hour's cap through.
    """

    WINDOW_S = 3600.0

    def __init__(self, cap: int, clock: Callable[[], float]) -> None:
        self.cap = cap
        self.clock = clock
        self._spent: dict[str, list[tuple[float, int]]] = {}
        self._warned: set[str] = set()

    def spend(self, requester: str, gas: int) -> None:
        if self.cap and requester:
            self._spent.setdefault(requester.lower(), []).append((self.clock(), gas))

    def spent(self, requester: str) -> int:
        entries = self._spent.get(requester.lower(), [])
        floor = self.clock() - self.WINDOW_S
        entries[:] = [(t, g) for t, g in entries if t > floor]
        return sum(g for _, g in entries)

    def allows(self, requester: str) -> bool:
        if not self.cap or not requester:
            return True
        if self.spent(requester) < self.cap:
            self._warned.discard(requester.lower())
            return True
        if requester.lower() not in self._warned:
            self._warned.add(requester.lower())
            log.warning(
                "requester %s spent its completion gas cap (%d gas in the last hour);"
                " its results wait",
                requester,
                self.cap,
                extra={"requester": requester},
            )
        return False


def _int_reply(reply: Any) -> int:
    if isinstance(reply, Exception):
        raise reply
    if not isinstance(reply, str):
        raise ChainError(f"expected a hex number from the node, got {reply!r}")
    return int(reply, 16)
