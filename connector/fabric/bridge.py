"""The Fabric proxy-model bridge: watcher -> store -> pool -> store -> submitter.

``FabricBridge.run`` runs four loops under one ``asyncio.TaskGroup``, with
the conventions of the Ethereum bridge (``connector.bridge``):

- the **watcher** follows the chaincode's events and records new orders,
  completions (with batch skips) and cancels with its checkpoint; it
  reconnects to a peer that went away with its own bounded backoff;
- the **dispatcher** (shared with Ethereum) claims received orders and
  runs them in the pool, each signed for this channel and chaincode;
- the **submitter** sends signed results and settles its transactions;
- the **monitor** samples the store and the pool for the ops server.

A loop that meets a chain, node or store failure logs it, reports itself
unhealthy and retries with bounded exponential backoff; any other error
ends the TaskGroup and the bridge. ``stop`` ends the loops after their
current step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from connector.dispatcher import Dispatcher
from connector.fabric.adapters import FabricStoreSink, chain_id_of
from connector.fabric.gateway import FabricGateway
from connector.fabric.submitter import FabricSubmitter
from connector.fabric.watcher import FabricBatch, FabricWatcher
from connector.loops import StepLoops
from connector.ops import HealthSnapshot
from connector.states import State
from connector.store import StoredOrder, WorkOrderStore
from enclave_bridge.errors import (
    ChainError,
    ConfigurationError,
)
from enclave_bridge.pool import EnclavePool, Target
from enclave_bridge.processor import FabricTarget
from enclave_bridge.result_signature import FabricDomain

log = logging.getLogger("tcbridge.fabric.bridge")

# Worker status "active" in the chaincode's worker registry.
WORKER_ACTIVE = 1


@dataclass
class FabricSettings:
    channel: str
    chaincode: str
    start_block: int = 0
    poll_interval_s: float = 0.2
    # Distinct from the Ethereum bridge's claimer, so a restart of one never
    # releases the other's claims.
    claimer: str = field(
        default_factory=lambda: f"fabric-bridge@{socket.gethostname()}"
    )
    concurrency: int = 0
    execution_timeout_s: float = 30.0
    max_items: int = 50
    paused_flag: Path | None = None


class FabricBridge:
    def __init__(
        self,
        settings: FabricSettings,
        gateway: FabricGateway,
        store: WorkOrderStore,
        pool: EnclavePool,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.store = store
        self.pool = pool
        self.domain = FabricDomain(settings.channel, settings.chaincode)
        self.health = HealthSnapshot()
        workers = list(pool.worker_records())
        self.sink = FabricStoreSink(store, settings.channel, settings.chaincode, workers)
        self.watcher = FabricWatcher(
            gateway.chaincode_events, self.sink, start_block=settings.start_block
        )
        self.watcher.on_commit = self._recorded
        self.submitter = FabricSubmitter(gateway, store, max_items=settings.max_items)
        concurrency = settings.concurrency or pool.size * pool.depth * 2
        self.dispatcher = Dispatcher(
            store, pool, self._target_for, claimer=settings.claimer,
            concurrency=concurrency, max_seconds=settings.execution_timeout_s,
            paused=self.paused, chain_id=chain_id_of(settings.channel),
        )
        self.loops = StepLoops(self.health, settings.poll_interval_s)

    def paused(self) -> bool:
        flag = self.settings.paused_flag
        return flag is not None and flag.exists()

    def _target_for(self, order: StoredOrder) -> Target:
        # The store's request hash column holds SHA-256 of the request on
        # Fabric: what the chaincode stored at submit and checks at complete.
        return FabricTarget(self.domain, order.work_order_id, order.request_keccak)

    def _recorded(self, batch: FabricBatch) -> None:
        if batch.events:
            self.dispatcher.wake.set()

    # -- start-up checks --------------------------------------------------

    async def check_workers(self) -> None:
        """Every pool identity must be registered, active, with the pool's key."""
        problems = []
        for worker_id, record in self.pool.worker_records().items():
            try:
                raw = await self.gateway.evaluate("workerRetrieve", worker_id)
            except ChainError as exc:
                problems.append(f"worker {worker_id}: {exc}")
                continue
            found = json.loads(raw)
            key = str(record.details["workerTypeData"]["verificationKey"])
            if found.get("verifyingKeyPem", "").strip() != key.strip():
                problems.append(
                    f"worker {worker_id} is registered with another verifying key"
                )
            elif found.get("status") != WORKER_ACTIVE:
                problems.append(
                    f"worker {worker_id} has status {found.get('status')}, not active"
                )
        if problems:
            raise ConfigurationError(
                "the chaincode's worker registry does not match the pool: "
                + "; ".join(problems)
                + ". Run `tcbridge --chain fabric worker register --config FILE`."
            )

    # -- running ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.check_workers()
        await self.dispatcher.recover()
        await self.submitter.recover()
        log.info(
            "bridge started on Fabric channel %s, chaincode %s, identity %s,"
            " %d pool processes", self.settings.channel, self.settings.chaincode,
            self.gateway.identity.label, self.pool.size,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.loops.run("watcher", lambda: self.watcher.watch(stop), stop))
            tg.create_task(self.dispatcher.run(stop))
            tg.create_task(self.loops.run("submitter", self._submit, stop))
            tg.create_task(self.loops.run("monitor", self._monitor, stop, interval=2.0))
        log.info("bridge stopped")

    async def _submit(self) -> None:
        if not self.paused():
            await self.submitter.step()

    async def _monitor(self) -> None:
        # A cheap query proves the peer answers (the event stream may sit
        # idle for long); a failure marks the bridge unhealthy via _loop.
        for worker_id in list(self.pool.worker_records())[:1]:
            await self.gateway.evaluate("workerRetrieve", worker_id)
        self.health.paused = self.paused()
        counts = await self.store.counts_by_state()
        stats = self.pool.stats()
        queue_age = await self.store.oldest_age(State.RECEIVED)
        checkpoint = self.watcher.checkpoint
        self.health.metrics = {
            "watcher_checkpoint_block": checkpoint.block if checkpoint else -1,
            "watcher_reconnects_total": self.watcher.reconnects,
            "work_orders": {(("state", s.value),): n for s, n in counts.items()},
            "queue_oldest_age_seconds": queue_age or 0.0,
            "pool_queued": stats.queued,
            "pool_in_flight": stats.in_flight,
            "pool_done_total": stats.done,
            "pool_failed_total": stats.failed,
            "completion_txs_total": self.submitter.stats.sent,
            "mvcc_conflicts_total": self.submitter.stats.conflicts,
            "paused": int(self.health.paused),
        }


__all__ = ["FabricBridge", "FabricSettings", "chain_id_of"]
