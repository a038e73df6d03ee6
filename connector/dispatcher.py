"""The dispatcher: claimed work orders to the enclave pool, signed results to the store.

It keeps at most ``concurrency`` orders claimed and in the pool at once,
enough to keep every pool process busy while the database round trips
overlap, and few enough that a crash never holds many claims. Database work
is batched, because each transaction costs far more than the rows in it:

- claims are taken in chunks, when a quarter of the slots are free (or
  the pool ran dry), not one order per freed slot;
- results go to a queue that one saver task drains, saving everything
  finished so far in one transaction.

Claims are made under a stable ``claimer`` name: a restarted bridge first
gives back what its previous run held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from connector.store import OrderRef, ResultToSave, StoredOrder, WorkOrderStore
from enclave_bridge.eea import EeaError
from enclave_bridge.errors import InvalidTransition
from enclave_bridge.pool import EnclavePool, PoolJob, Target

log = logging.getLogger("tcbridge.dispatcher")

# How long to sleep when nothing is claimable; new orders wake it earlier.
IDLE_POLL_S = 0.05
# Results saved in one transaction at most.
SAVE_BATCH = 256
# The answer to an order whose pool process died with it twice.
_GIVE_UP = (
    int(EeaError.UNKNOWN_ERROR),
    "the pool process running this work order stopped twice; it is not run again",
)


@dataclass
class DispatcherStats:
    dispatched: int = 0
    results: int = 0
    errors: int = 0
    in_flight: int = 0


class Dispatcher:
    def __init__(
        self,
        store: WorkOrderStore,
        pool: EnclavePool,
        target_for: Callable[[StoredOrder], Target],
        *,
        claimer: str,
        concurrency: int,
        max_seconds: float | None = None,
        paused: Callable[[], bool] = lambda: False,
        expected_ids_for: Callable[[StoredOrder], Mapping[str, str] | None] | None = None,
        chain_id: int | str | None = None,
        per_requester: int | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.target_for = target_for
        self.claimer = claimer
        self.concurrency = max(1, concurrency)
        self.max_seconds = max_seconds
        self.paused = paused
        # The ids the chain put in the event, which the request's JSON must
        # repeat; the pool refuses a mismatch with an error signed by the
        # worker the chain named (the only signature the registry accepts).
        self.expected_ids_for = expected_ids_for or ids_from_event
        # Claims stay on this bridge's chain, requesters take turns, and none
        # holds more than ``per_requester`` orders in the pool at once.
        self.chain_id = chain_id
        self.per_requester = per_requester
        self.stats = DispatcherStats()
        self.wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: asyncio.Queue[ResultToSave] = asyncio.Queue()
        self._unsaved = 0

    async def recover(self) -> None:
        """Give back the claims an earlier run of this claimer left behind."""
        released = await self.store.release_claims(self.claimer)
        if released.requeued:
            log.info("requeued %d orders claimed by a previous run", len(released.requeued))
        for ref in released.exhausted:
            # Claimed twice and never answered: the pool answers it with an
            # error result now, so the requester is not left waiting.
            order = await self.store.get_order(ref)
            if order is not None:
                self._start(order, give_up=True)

    async def run(self, stop: asyncio.Event) -> None:
        saver = asyncio.create_task(self._save_loop())
        try:
            await self._claim_loop(stop)
        finally:
            await self._drain(saver)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        chunk = max(1, self.concurrency // 4)
        while not stop.is_set():
            busy = len(self._tasks) + self._unsaved
            free = self.concurrency - busy
            orders: list[StoredOrder] = []
            if (free >= chunk or busy == 0) and not self.paused():
                orders = await self.store.claim_next(
                    free, self.claimer, chain_id=self.chain_id,
                    per_requester=self.per_requester,
                )
            for order in orders:
                self._start(order)
            if orders and len(orders) == free:
                continue
            if self._tasks and free - len(orders) < chunk:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            self.wake.clear()
            await _wait_any(stop, self.wake, IDLE_POLL_S)

    def _start(self, order: StoredOrder, *, give_up: bool = False) -> None:
        task = asyncio.create_task(self._execute(order, give_up))
        self._tasks.add(task)
        self.stats.in_flight = len(self._tasks)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self.stats.in_flight = len(self._tasks)
            if not t.cancelled() and t.exception() is not None:
                log.error("dispatch of %s failed: %s", order.work_order_id, t.exception())
                self.stats.errors += 1

        task.add_done_callback(done)

    async def _execute(self, order: StoredOrder, give_up: bool) -> None:
        if order.result is not None:
            # Made before the order was orphaned and seen again: keep it.
            r = order.result
            self._queue(ResultToSave(order.ref, r.status, r.response, r.signature, r.request_hash))
            return
        self.stats.dispatched += 1
        job = PoolJob(
            order_key=_job_key(order.ref), request=order.request,
            target=self.target_for(order), max_seconds=self.max_seconds,
            # Claimed twice and never answered: sign an error result, run
            # nothing (a result the pool already committed is kept).
            refuse=_GIVE_UP if give_up else None,
            expected_ids=self.expected_ids_for(order),
        )
        result = await self.pool.submit(job)
        if result.result_signature is None:
            log.error(
                "work order %s: the pool could not sign a result for worker %s; "
                "it stays claimed until the worker's identity is loaded",
                order.work_order_id, order.worker_id,
            )
            return
        self._queue(ResultToSave(order.ref, result.status, result.response_bytes,
                                 result.result_signature, result.request_hash or b""))

    def _queue(self, item: ResultToSave) -> None:
        self._unsaved += 1
        self._results.put_nowait(item)

    async def _save_loop(self) -> None:
        while True:
            batch = [await self._results.get()]
            while len(batch) < SAVE_BATCH and not self._results.empty():
                batch.append(self._results.get_nowait())
            try:
                outcomes = await self.store.save_results(batch, claimer=self.claimer)
            finally:
                self._unsaved -= len(batch)
            for item, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, InvalidTransition):
                    log.warning("result of %s not saved: %s", item.ref.order_key.hex(), outcome)
                else:
                    self.stats.results += 1

    async def _drain(self, saver: asyncio.Task[None]) -> None:
        """On shutdown: let running orders finish briefly, save them, give back the rest."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._unsaved and not saver.done():
            await asyncio.sleep(0.01)
        saver.cancel()
        await asyncio.gather(saver, return_exceptions=True)
        await self.store.release_claims(self.claimer)


def ids_from_event(order: StoredOrder) -> Mapping[str, str]:
    """The ids an order's submit event carried (indexed topics on Ethereum)."""
    return {
        "workOrderId": order.work_order_id.lower(),
        "workerId": order.worker_id.lower(),
        "requesterId": order.requester_id.lower(),
    }


def _job_key(ref: OrderRef) -> str:
    return f"{ref.chain_id}:{ref.contract}:{ref.order_key.hex()}"


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
