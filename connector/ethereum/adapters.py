"""The Ethereum watcher's and submitter's views of the work-order store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence

from eth_hash.auto import keccak

from connector.ethereum import events as ev
from connector.ethereum.submitter import PendingTx, ReadyResult
from connector.ethereum.transactions import SignedTx
from connector.ethereum.watcher import Checkpoint, WatchBatch
from connector.store import BadLog, Fees, NewOrder, OrderRef, WorkOrderStore
from connector.store.records import Settlement

log = logging.getLogger("tcbridge.watcher")


class ContractSink:
    """What every contract's watcher sink shares: checkpoint, quarantine, reorg rollback."""

    store: WorkOrderStore
    chain_id: int
    contract: str
    recorded: int

    async def load_checkpoint(self) -> Checkpoint | None:
        point = await self.store.get_checkpoint(self.chain_id, self.contract)
        if point is None:
            return None
        hashes = {n: "0x" + h.hex() for n, h in point.recent_hashes.items()}
        return Checkpoint(point.block_number, hashes)

    async def rollback_above(self, block: int, checkpoint: Checkpoint) -> None:
        await self.store.orphan_from_block(self.chain_id, self.contract, block + 1)

    def translate(self, event: ev.AnyEvent) -> NewOrder | Settlement | None:
        """This contract's event as an order or a settlement; None to ignore it."""
        raise NotImplementedError

    async def commit(self, batch: WatchBatch) -> None:
        """Record the batch's orders, quarantined logs and settlements with the checkpoint."""
        orders: list[NewOrder] = []
        malformed: list[BadLog] = []
        settlements: list[Settlement] = []
        for event in batch.events:
            if isinstance(event, ev.MalformedLog):
                malformed.append(self.bad_log(event))
                continue
            item = self.translate(event)
            if isinstance(item, NewOrder):
                orders.append(item)
            elif item is not None:
                settlements.append(item)
        await self.store.record_events(
            self.chain_id,
            self.contract,
            orders,
            malformed,
            checkpoint_block=batch.checkpoint.block,
            recent_hashes=dict(batch.checkpoint.hashes),
            settlements=settlements,
        )
        self.recorded += len(orders)

    @staticmethod
    def bad_log(event: ev.MalformedLog) -> BadLog:
        ref = event.ref
        return BadLog(
            ref.block_number, ref.block_hash, ref.tx_hash, ref.log_index, event.data, event.reason
        )


class StoreWatcherSink(ContractSink):
    """Writes one registry's confirmed events into the store, atomically with the checkpoint.

    ``our_workers`` are the worker ids (lower-case hex) the pool serves; an
    order for any other worker is recorded as SKIPPED, never dropped.
    """

    def __init__(
        self,
        store: WorkOrderStore,
        chain_id: int,
        registry: str,
        our_workers: Collection[str],
        *,
        requester_allowlist: Collection[str] = (),
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.registry = registry
        self.contract = registry
        self.our_workers = {w.lower() for w in our_workers}
        # Empty: every requester is served. Otherwise orders of other requesters
        # are recorded SKIPPED: every error completion costs the relayer gas.
        self.allowlist = {a.lower() for a in requester_allowlist}
        self.recorded = 0

    def translate(self, event: ev.AnyEvent) -> NewOrder | Settlement | None:
        ref = event.ref
        if isinstance(event, ev.WorkOrderSubmitted):
            return self._new_order(event)
        if isinstance(event, ev.WorkOrderCompleted):
            return Settlement(event.order_key, "completed", ref.block_number, status=event.status)
        if isinstance(event, ev.WorkOrderCancelled):
            return Settlement(event.order_key, "cancelled", ref.block_number)
        if isinstance(event, ev.CompletionSkipped):
            return Settlement(event.order_key, "skipped", ref.block_number, reason=event.reason)
        return None

    def _new_order(self, event: ev.WorkOrderSubmitted) -> NewOrder:
        worker = event.worker_id.hex()
        return NewOrder(
            order_key=event.order_key,
            work_order_id=event.work_order_id.hex(),
            worker_id=worker,
            requester_id=event.requester_id.hex(),
            request=event.request,
            request_keccak=keccak(event.request),
            block_number=event.ref.block_number,
            block_hash=event.ref.block_hash,
            tx_hash=event.ref.tx_hash,
            log_index=event.ref.log_index,
            requester_address=event.requester,
            callback_gas=event.callback_gas,
            skipped=worker not in self.our_workers
            or not self._allowed(event.requester),
        )

    def _allowed(self, requester: str) -> bool:
        if not self.allowlist or requester.lower() in self.allowlist:
            return True
        log.info(
            "work order from %s skipped: not on the requester allow-list",
            requester,
            extra={"requester": requester},
        )
        return False


class StoreSubmitterAdapter:
    """The submitter's store protocol on top of :class:`WorkOrderStore`."""

    def __init__(
        self,
        store: WorkOrderStore,
        chain_id: int,
        registry: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.registry = registry
        self.clock = clock
        # Wall-clock age of stored transactions is tracked in memory: after a
        # restart every pending transaction counts as just sent, which at worst
        # delays a fee bump by one stuck period.
        self._sent_at: dict[int, float] = {}

    def _ref(self, key: bytes) -> OrderRef:
        return OrderRef.of(self.chain_id, self.registry, key)

    async def ready_results(self, limit: int) -> list[ReadyResult]:
        ready = await self.store.ready_completions(limit, self.chain_id, self.registry)
        # ready_since is wall-clock time; the submitter ages items on its clock.
        offset = self.clock() - time.time()
        return [
            ReadyResult(
                item.ref.order_key,
                item.status,
                item.response,
                item.signature,
                item.requester_address or "",
                item.ready_since.timestamp() + offset,
                item.callback_gas,
            )
            for item in ready
        ]

    async def record_send(
        self,
        sender: str,
        chain_nonce: int,
        build: Callable[[int], SignedTx],
        order_keys: Sequence[bytes],
        gas: int,
        data: bytes,
    ) -> SignedTx:
        refs = [self._ref(k) for k in order_keys]
        async with self.store.reserve_nonce(
            self.chain_id, sender, node_nonce=chain_nonce
        ) as slot:
            signed = build(slot.nonce)
            await slot.record(
                signed.raw,
                signed.hash,
                refs,
                Fees(
                    gas_limit=gas,
                    max_fee_per_gas=signed.max_fee,
                    max_priority_fee_per_gas=signed.max_priority_fee,
                ),
                submit=True,
            )
        self._sent_at[signed.nonce] = self.clock()
        return signed

    async def record_replacement(self, sender: str, tx: SignedTx) -> None:
        stored = await self.store.get_transaction(self.chain_id, sender, tx.nonce)
        gas = stored.fees.gas_limit if stored is not None else None
        await self.store.record_fee_bump(
            self.chain_id,
            sender,
            tx.nonce,
            tx.raw,
            tx.hash,
            Fees(
                gas_limit=gas,
                max_fee_per_gas=tx.max_fee,
                max_priority_fee_per_gas=tx.max_priority_fee,
            ),
        )
        self._sent_at[tx.nonce] = self.clock()

    async def pending_transactions(self, sender: str) -> list[PendingTx]:
        stored = await self.store.pending_transactions(self.chain_id, sender)
        out = []
        for tx in stored:
            data = _calldata_of(tx.raw)
            out.append(
                PendingTx(
                    nonce=tx.nonce,
                    raw=tx.raw,
                    hashes=["0x" + h.hex() for h in tx.all_hashes]
                    or ["0x" + tx.tx_hash.hex()],
                    max_fee=tx.fees.max_fee_per_gas or 0,
                    max_priority_fee=tx.fees.max_priority_fee_per_gas or 0,
                    gas=tx.fees.gas_limit or 0,
                    data=data,
                    order_keys=[r.order_key for r in tx.orders],
                    sent_at=self._sent_at.setdefault(tx.nonce, self.clock()),
                )
            )
        return out

    async def mark_mined(
        self, sender: str, nonce: int, tx_hash: str, ok: bool, gas_used: int
    ) -> None:
        await self.store.set_transaction_state(
            self.chain_id,
            sender,
            nonce,
            "mined" if ok else "dropped",
            mined_hash=tx_hash,
        )
        self._sent_at.pop(nonce, None)

    async def reopen_from(self, sender: str, nonce: int) -> int:
        return await self.store.reopen_transactions(self.chain_id, sender, nonce)

    async def release(self, order_keys: Sequence[bytes], reason: str) -> None:
        await self.store.requeue_submission([self._ref(k) for k in order_keys])

    async def settle_unsendable(self, order_keys: Sequence[bytes], state: int) -> None:
        # Nothing to write: the watcher closes these orders when it reaches
        # their confirmed WorkOrderCompleted / WorkOrderCancelled events.
        return None


def _calldata_of(raw: bytes) -> bytes:
    import rlp

    fields = rlp.decode(raw[1:])
    return bytes(fields[7])
