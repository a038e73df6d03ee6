"""The Fabric submitter: signed results to the chaincode, each transaction once.

One step takes the ready results of this chaincode and sends them as
``workOrderComplete`` (one) or ``workOrderCompleteBatch`` (several):

1. Propose and endorse, with a fresh transaction id.
2. Store the signed envelope and its transaction id in the store's
   transactions table (sender = the MSP identity, nonce = a local
   sequence), marking the orders SUBMITTED in the same database
   transaction. Only then Submit: a crash after this point leaves a
   record that the next run settles instead of sending the results again.
3. Wait for CommitStatus. VALID: done (the watcher settles the orders from
   the completion event). MVCC_READ_CONFLICT: another transaction touched
   the same keys first; endorse again with a new transaction id, at most
   ``MAX_CONFLICT_RETRIES`` times. Anything else: give the orders back to
   RESULT_READY for a later step.

After a restart :meth:`FabricSubmitter.recover` asks CommitStatus for
every stored pending transaction. Only one that is still unknown after a
short wait (the crash came before Submit reached the orderer) is
submitted again, as the same signed envelope: a second copy of one
transaction id is refused by Fabric (DUPLICATE_TXID), so a result is
never applied twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fabric_protos.common import common_pb2

from connector.fabric.adapters import chain_id_of, tx_bytes
from connector.fabric.gateway import (
    MVCC_READ_CONFLICT,
    VALID,
    EndorsementRefused,
    FabricGateway,
    Prepared,
)
from connector.store import OrderRef, StoredOrder, StoredTransaction, WorkOrderStore
from enclave_bridge.errors import NodeUnavailable, TransactionFailed

log = logging.getLogger("tcbridge.fabric.submitter")

# Re-endorsements after an MVCC conflict: a conflict means another writer
# touched the order first, which settles within one or two rounds.
MAX_CONFLICT_RETRIES = 3
# How long to wait for a just-submitted transaction to be committed (the
# development peer cuts blocks every 0.1 s; real orderers within seconds).
COMMIT_TIMEOUT_S = 30.0
# After a restart, how long CommitStatus may take to find a stored
# transaction before it is taken as never submitted.
RECOVER_WAIT_S = 3.0


@dataclass
class SubmitterStats:
    sent: int = 0
    committed: int = 0
    conflicts: int = 0
    invalid: int = 0
    recovered: int = 0


class FabricSubmitter:
    def __init__(
        self,
        gateway: FabricGateway,
        store: WorkOrderStore,
        *,
        max_items: int = 50,
        commit_timeout_s: float = COMMIT_TIMEOUT_S,
        recover_wait_s: float = RECOVER_WAIT_S,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.chain_id = chain_id_of(gateway.channel)
        self.chaincode = gateway.chaincode
        self.sender = gateway.identity.label
        self.max_items = max(1, max_items)
        self.commit_timeout_s = commit_timeout_s
        self.recover_wait_s = recover_wait_s
        self.stats = SubmitterStats()
        self.pending_count = 0

    async def recover(self) -> None:
        """Settle every transaction a previous run stored but did not see committed."""
        pending = await self.store.pending_transactions(self.chain_id, self.sender)
        self.pending_count = len(pending)
        for tx in pending:
            await self._settle_stored(tx)
        self.pending_count = 0

    async def step(self) -> int:
        """Send the ready results (one transaction); return how many orders it carried.

        A transaction a failed earlier step left stored but unsettled (the
        peer went away after Submit) is settled first, as after a restart.
        """
        await self.recover()
        ready = [
            order
            for order in await self.store.ready_results(self.max_items, self.chain_id)
            if order.ref.contract == self.chaincode and order.result is not None
        ]
        if not ready:
            return 0
        await self._send(ready)

        return len(ready)

    # -- sending -------------------------------------------------------------

    async def _send(self, orders: Sequence[StoredOrder]) -> None:
        refs = [order.ref for order in orders]
        for attempt in range(1, MAX_CONFLICT_RETRIES + 2):
            prepared = await self._endorse(orders)
            await self._record(prepared, refs)
            await self.gateway.submit(prepared.tx_id, prepared.envelope)
            self.stats.sent += 1
            code, block = await self.gateway.commit_status(
                prepared.tx_id, timeout=self.commit_timeout_s
            )
            if code == VALID:
                await self._mark(prepared.tx_id, "mined")
                self.stats.committed += 1
                log.info(
                    "completion transaction committed",
                    extra={"chain": self.chain_id, "tx_hash": prepared.tx_id,
                           "block": block, "orders": len(refs)},
                )
                return
            await self._mark(prepared.tx_id, "dropped")
            if code != MVCC_READ_CONFLICT:
                break
            self.stats.conflicts += 1
            log.info(
                "completion %s hit an MVCC read conflict in block %d (attempt %d of"
                " %d); endorsing again", prepared.tx_id, block, attempt,
                MAX_CONFLICT_RETRIES + 1,
            )
        self.stats.invalid += 1
        await self.store.requeue_submission(refs)
        raise TransactionFailed(
            f"completion transaction {prepared.tx_id} for {len(refs)} orders was"
            f" invalidated with code {code}; the orders are queued again",
            reason=str(code),
        )

    async def _endorse(self, orders: Sequence[StoredOrder]) -> Prepared:
        items = [_item(order) for order in orders]
        if len(items) == 1:
            item = items[0]
            proposal = self.gateway.propose(
                "workOrderComplete", item["orderKey"], item["status"],
                item["response"], item["signatureHex"],
            )
            try:
                return await self.gateway.endorse(proposal)
            except EndorsementRefused as exc:
                # The batch function records why (a skip reason in its event),
                # so the order is settled on-chain rather than retried forever.
                log.warning(
                    "workOrderComplete refused (%s); sending it as a batch of one",
                    exc.reason,
                )
        batch = json.dumps(items, separators=(",", ":"))
        proposal = self.gateway.propose("workOrderCompleteBatch", batch)

        return await self.gateway.endorse(proposal)

    async def _record(self, prepared: Prepared, refs: Sequence[OrderRef]) -> None:
        # Durable before Submit: the nonce is only a local sequence that
        # orders this identity's transactions in the store.
        async with self.store.reserve_nonce(self.chain_id, self.sender) as slot:
            await slot.record(
                prepared.envelope.SerializeToString(),
                tx_bytes(prepared.tx_id),
                refs,
                submit=True,
            )

    async def _mark(self, tx_id: str, state: str) -> None:
        for tx in await self.store.pending_transactions(self.chain_id, self.sender):
            if tx.tx_hash == tx_bytes(tx_id):
                await self.store.set_transaction_state(
                    self.chain_id, self.sender, tx.nonce, state,
                    mined_hash=tx.tx_hash if state == "mined" else None,
                )

    # -- recovery ------------------------------------------------------------

    async def _settle_stored(self, tx: StoredTransaction) -> None:
        tx_id = tx.tx_hash.hex()
        try:
            code, block = await self.gateway.commit_status(
                tx_id, timeout=self.recover_wait_s
            )
        except NodeUnavailable:
            # Not in any block: the crash came before Submit reached the
            # orderer. The same envelope again is safe (one tx id, one result).
            log.info("stored transaction %s was never committed; submitting it", tx_id)
            envelope = common_pb2.Envelope.FromString(tx.raw)
            await self.gateway.submit(tx_id, envelope)
            code, block = await self.gateway.commit_status(
                tx_id, timeout=self.commit_timeout_s
            )
        self.stats.recovered += 1
        state = "mined" if code == VALID else "dropped"
        await self.store.set_transaction_state(
            self.chain_id, self.sender, tx.nonce, state,
            mined_hash=tx.tx_hash if code == VALID else None,
        )
        log.info(
            "stored transaction %s settled after restart: code %d in block %d",
            tx_id, code, block,
            extra={"chain": self.chain_id, "tx_hash": tx_id, "block": block},
        )
        if code != VALID:
            await self.store.requeue_submission(tx.orders)


def _item(order: StoredOrder) -> dict[str, str]:
    result = order.result
    assert result is not None
    return {
        "orderKey": order.ref.order_key.hex(),
        "status": str(result.status),
        "response": result.response.decode("utf-8"),
        "signatureHex": result.signature.hex(),
    }
