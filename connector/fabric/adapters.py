"""The Fabric watcher's view of the work-order store.

Orders are keyed by (``fabric:<channel>``, chaincode name, order key). The
column the Ethereum side fills with the keccak of the request holds the
SHA-256 of the request here: the hash the chaincode stores and the worker
signs over. Fabric events carry no block hash; the store gets an empty one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from connector.fabric import events as ev
from connector.fabric.watcher import FabricBatch, FabricCheckpoint
from connector.store import BadLog, NewOrder, Settlement, WorkOrderStore

NO_BLOCK_HASH = b""


def chain_id_of(channel: str) -> str:
    """The store's chain id for one Fabric channel."""
    return f"fabric:{channel}"


def tx_bytes(tx_id: str) -> bytes:
    """A transaction id as the store's ``tx_hash`` bytes (hex ids decode to 32 bytes)."""
    try:
        return bytes.fromhex(tx_id)
    except ValueError:
        return tx_id.encode("utf-8", "replace")


class FabricStoreSink:
    """Writes one chaincode's events into the store, atomically with the checkpoint.

    ``our_workers`` are the worker ids (lower-case hex) the pool serves; an
    order for any other worker is recorded as SKIPPED, never dropped.
    """

    def __init__(
        self,
        store: WorkOrderStore,
        channel: str,
        chaincode: str,
        our_workers: Collection[str],
    ) -> None:
        self.store = store
        self.chain_id = chain_id_of(channel)
        self.chaincode = chaincode
        self.our_workers = {w.lower() for w in our_workers}

    async def load_checkpoint(self) -> FabricCheckpoint | None:
        point = await self.store.get_checkpoint(self.chain_id, self.chaincode)
        if point is None:
            return None
        return FabricCheckpoint(point.block_number, point.last_tx_id)

    async def commit(self, batch: FabricBatch) -> None:
        orders: list[NewOrder] = []
        malformed: list[BadLog] = []
        settlements: list[Settlement] = []
        for event in batch.events:
            ref = event.ref
            if isinstance(event, ev.OrderSubmitted):
                orders.append(self._new_order(event))
            elif isinstance(event, ev.MalformedEvent):
                malformed.append(BadLog(
                    ref.block_number, NO_BLOCK_HASH, tx_bytes(ref.tx_id), ref.index,
                    event.payload, event.reason,
                ))
            elif isinstance(event, ev.OrderCompleted):
                settlements.append(Settlement(
                    event.order_key, "completed", ref.block_number, status=event.status
                ))
            elif isinstance(event, ev.OrderCancelled):
                settlements.append(
                    Settlement(event.order_key, "cancelled", ref.block_number)
                )
            else:
                settlements.append(Settlement(
                    event.order_key, "skipped", ref.block_number,
                    reason=event.reason_code,
                ))
        await self.store.record_events(
            self.chain_id, self.chaincode, orders, malformed,
            checkpoint_block=batch.checkpoint.block,
            last_tx_id=batch.checkpoint.tx_id,
            settlements=settlements,
        )

    def _new_order(self, event: ev.OrderSubmitted) -> NewOrder:
        worker = event.worker_id.lower()
        return NewOrder(
            order_key=event.order_key,
            work_order_id=event.work_order_id,
            worker_id=worker,
            requester_id=event.requester_id,
            request=event.request,
            request_keccak=hashlib.sha256(event.request).digest(),
            block_number=event.ref.block_number,
            block_hash=NO_BLOCK_HASH,
            tx_hash=tx_bytes(event.ref.tx_id),
            log_index=event.ref.index,
            requester_address=event.requester_msp,
            skipped=worker not in self.our_workers,
        )
